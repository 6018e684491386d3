//! TLS (rustls) by configuration: a client trusting the server's certificate works; a
//! plaintext client gets nothing.

use memd_client::MemdClient;
use memd_tests::{ADMIN_KEY, TestServer, create_memory};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

#[tokio::test]
async fn tls_serves_trusted_clients_and_refuses_plaintext() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).unwrap();
    let server = TestServer::start_with(|config| {
        config.tls_cert_path = Some(cert_path.clone());
        config.tls_key_path = Some(key_path.clone());
    })
    .await;

    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(certified.cert.pem()))
        .domain_name("localhost");
    let channel = Endpoint::from_shared(format!("https://{}", server.addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let client = MemdClient::from_channel(channel, Some(ADMIN_KEY.into())).unwrap();
    let memory = create_memory(&client, "tls", None).await;
    assert_eq!(client.get_memory(&memory.memory_id).await.unwrap(), memory);

    let plaintext = match MemdClient::connect(server.endpoint(), Some(ADMIN_KEY.into())).await {
        Ok(client) => client
            .get_memory(&memory.memory_id)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Err(err) => Err(err.to_string()),
    };
    assert!(
        plaintext.is_err(),
        "a plaintext client must not be served over TLS"
    );
}
