"""The model registry server: a gRPC servicer over a peewee store."""
