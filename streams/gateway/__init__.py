"""The Open Inference Protocol v2 (KServe v2, as Triton and MLServer speak it) over HTTP and gRPC.

A gateway onto the same topics and workers as every Kafka client: an infer call becomes one
request on the request topic and waits for its answer on the gateway's reply topic
(`streams.gateway.service`). ``kinfer gateway`` runs it (`streams.gateway.server`).

| module | what it does |
|---|---|
| ``service`` | the protocol-neutral core: metadata, readiness, infer over Kafka |
| ``kafka_link`` | the one InferenceClient, (re)started in the background |
| ``catalog`` | the model repository's versions as metadata |
| ``signatures`` | each task's tensors, and the mapping to and from the Kafka contract |
| ``tensors`` | datatypes, shapes, JSON / raw / typed tensor contents |
| ``rest``, ``rest_codec`` | HTTP (aiohttp), with the binary tensor data extension |
| ``grpc_service`` | gRPC ``inference.GRPCInferenceService`` (grpcio, ``proto/``) |
| ``auth`` | bearer tokens from a secret file, each with its models |
| ``errors`` | the error types and their HTTP and gRPC statuses |
| ``observe`` | the seam for metrics: every request's endpoint, status and duration |
"""
