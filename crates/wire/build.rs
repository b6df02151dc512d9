// protox compiles the .proto files in Rust, so building needs no `protoc` binary.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Envoy's external authorization and rate limit services (subsets with
    // Envoy's packages and field numbers): the proxy calls them, tests serve them.
    let files = [
        "proto/proxy.proto",
        "proto/envoy/auth.proto",
        "proto/envoy/ratelimit.proto",
    ];
    let fds = protox::compile(files, ["proto"])?;
    // The gRPC services (tonic) only with feature `grpc`; the messages need prost alone.
    let grpc = std::env::var_os("CARGO_FEATURE_GRPC").is_some();
    tonic_prost_build::configure()
        .build_server(grpc)
        .build_client(grpc)
        // Ordered maps make encoding deterministic, so equal configs get equal versions.
        .btree_map(".")
        .type_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        .type_attribute(".", "#[serde(rename_all = \"snake_case\")]")
        // The compact endpoint form writes each distinct one once (endpoints.rs).
        .type_attribute(".trellis.proxy.v1.EndpointShared", "#[derive(Eq, Hash)]")
        // Hand-written static config files may leave out any field.
        .message_attribute(".", "#[serde(default)]")
        // Config dumps (proxy admin, control plane debug) never show a key.
        .field_attribute(
            ".trellis.proxy.v1.GatewayTls.private_key",
            "#[serde(serialize_with = \"crate::redacted\")]",
        )
        .field_attribute(
            ".trellis.proxy.v1.UpstreamTls.private_key_pem",
            "#[serde(serialize_with = \"crate::redacted\")]",
        )
        // Nor do logs: their Debug is written by hand in lib.rs.
        .skip_debug([
            ".trellis.proxy.v1.GatewayTls",
            ".trellis.proxy.v1.UpstreamTls",
        ])
        .compile_fds(fds)?;
    if grpc {
        // The discovery server again, by hand, so that it writes responses
        // whose resources are already encoded (`server::EncodedResponse`):
        // one encoding per resource version, shared by every stream.
        let stream = tonic_build::manual::Method::builder()
            .name("stream")
            .route_name("Stream")
            .input_type("crate::pb::DiscoveryRequest")
            .output_type("crate::server::EncodedResponse")
            .codec_path("tonic_prost::ProstCodec")
            .client_streaming()
            .server_streaming()
            .build();
        let service = tonic_build::manual::Service::builder()
            .name("AggregatedDiscovery")
            .package("trellis.proxy.v1")
            .method(stream)
            .build();
        tonic_build::manual::Builder::new()
            .build_client(false)
            .compile(&[service]);
    }
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
