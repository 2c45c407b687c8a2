"""Generated Open Inference Protocol v2 gRPC stubs (see grpc_predict_v2.proto for how to regenerate)."""
