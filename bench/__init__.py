"""`make bench`: the registry's calls measured beside a near no-op gRPC call, at small and large sizes."""
