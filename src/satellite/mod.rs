//! The Satellite map service: the map, the gRPC handlers, the client, the CLI and the demo PKI.
