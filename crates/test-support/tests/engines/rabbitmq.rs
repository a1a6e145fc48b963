//! RabbitCluster: quorum queue leadership across nodes, and amqps.

use std::time::Instant;

use lapin::{
    BasicProperties, Connection, ConnectionProperties, DefaultConnectionBuilder,
    options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions},
    tcp::OwnedTLSConfig,
    types::{AMQPValue, FieldTable},
};
use test_support::{RabbitCluster, TlsFiles, eventually};

use crate::WAIT;

#[tokio::test]
async fn quorum_queue_leadership_moves_off_a_stopped_node() {
    let started = Instant::now();
    let mut rabbit = RabbitCluster::start(3).await;
    eprintln!("RabbitCluster (3 nodes) started in {:?}", started.elapsed());
    let running = rabbit.running_nodes(1).await.unwrap();
    assert_eq!(running.len(), 3, "{running:?}");

    let urls = rabbit.amqp_urls();
    let declare_on = |url: String| async move {
        let conn = Connection::connect(&url, ConnectionProperties::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        ch.queue_declare(
            "orders".into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await
        .unwrap();
        (conn, ch)
    };
    let (conn, ch) = declare_on(urls[0].clone()).await;
    ch.close(200, "declared".into()).await.unwrap();
    conn.close(200, "declared".into()).await.unwrap();
    let leader = eventually("the quorum queue to have a leader", WAIT, || {
        rabbit.queue_leader("orders")
    })
    .await;

    let stopping = Instant::now();
    rabbit.stop_node(leader).await;
    let rabbit = &rabbit;
    let new_leader = eventually("another node to lead the queue", WAIT, || async move {
        rabbit.queue_leader("orders").await.filter(|&l| l != leader)
    })
    .await;
    eprintln!(
        "leadership moved from node {leader} to node {new_leader} {:?} after the stop began",
        stopping.elapsed()
    );

    // The queue still takes and gives messages through the new leader's node.
    let (conn, ch) = declare_on(urls[new_leader].clone()).await;
    ch.basic_publish(
        "".into(),
        "orders".into(),
        BasicPublishOptions::default(),
        b"order-1",
        BasicProperties::default(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let got = eventually("the message back", WAIT, || {
        let ch = ch.clone();
        async move {
            ch.basic_get("orders".into(), BasicGetOptions { no_ack: true })
                .await
                .ok()?
        }
    })
    .await;
    assert_eq!(got.delivery.data, b"order-1");
    ch.close(200, "done".into()).await.unwrap();
    conn.close(200, "done".into()).await.unwrap();
}

#[tokio::test]
async fn tls_accepts_only_clients_that_trust_the_ca() {
    let tls = TlsFiles::generate();
    let started = Instant::now();
    let rabbit = RabbitCluster::start_tls(&tls).await;
    eprintln!(
        "RabbitCluster (1 TLS node) started in {:?}",
        started.elapsed()
    );
    test_support::install_crypto_provider();

    let connect = |ca: Vec<u8>| {
        let url = rabbit.amqps_url();
        async move {
            DefaultConnectionBuilder::new()?
                .with_uri_str(url)
                .with_tls_config(OwnedTLSConfig {
                    identity: None,
                    cert_chain: Some(String::from_utf8(ca).unwrap()),
                })
                .connect()
                .await
        }
    };
    let conn = connect(tls.ca_pem()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.close(200, "done".into()).await.unwrap();
    conn.close(200, "done".into()).await.unwrap();

    let err = connect(tls.wrong_ca_pem())
        .await
        .expect_err("a client trusting the wrong CA is refused");
    eprintln!("with the wrong CA: {err}");
}
