//! The network-fault infrastructure itself: toxiproxy in front of a real MinIO (latency,
//! a stalled peer, an outage) and our byte-flipping proxy, driven by an independent S3
//! client, and the real `snapferry` binary through a slow link. These tests do not depend
//! on how snapferry handles faults; they prove the faults are what they claim to be.

use std::time::{Duration, Instant};

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::ResponseChecksumValidation;
use testkit::*;

/// A MinIO with bucket `src` holding `key` = `body`.
fn minio_with(key: &str, body: &[u8]) -> Minio {
    let m = Minio::start();
    let c = m.client();
    rt().block_on(async {
        create_bucket(&c, "src").await;
        put(&c, "src", key, body.to_vec()).await;
    });
    m
}

#[test]
fn toxiproxy_forwards_s3_put_and_get_with_latency() {
    let m = Minio::start();
    let tp = Toxiproxy::start();
    let p = tp.proxy("minio", &m.endpoint);
    assert!(
        p.endpoint.starts_with("http://127.0.0.1:"),
        "{}",
        p.endpoint
    );
    let latency = p.toxic(
        Stream::Downstream,
        Toxic::Latency {
            latency_ms: 200,
            jitter_ms: 20,
        },
    );
    assert_eq!(p.toxics(), vec![latency.clone()]);
    let c = s3_client(&p.endpoint);
    let body = data(300_000, 1);
    rt().block_on(async {
        create_bucket(&c, "bkt").await;
        put(&c, "bkt", "k", body.clone()).await;
        let t = Instant::now();
        let got = get(&c, "bkt", "k").await;
        assert!(
            t.elapsed() >= Duration::from_millis(150),
            "a GET through 200 ms of latency took {:?}",
            t.elapsed()
        );
        assert_eq!(md5_hex(&got), md5_hex(&body));
        // What went through the proxy is on the server.
        assert_eq!(get(&m.client(), "bkt", "k").await, body);
    });
    p.remove_toxic(&latency);
    assert!(p.toxics().is_empty());
}

#[test]
fn toxiproxy_timeout_toxic_stalls_a_get_until_removed() {
    let body = data(100_000, 2);
    let m = minio_with("obj", &body);
    let tp = Toxiproxy::start();
    let p = tp.proxy("minio", &m.endpoint);
    let c = s3_client(&p.endpoint);
    let rt = rt();
    // Works before the toxic (and leaves a pooled connection the toxic then holds too).
    assert_eq!(rt.block_on(get(&c, "src", "obj")), body);
    let name = p.toxic(Stream::Downstream, Toxic::Timeout { timeout_ms: 0 });
    let t = Instant::now();
    let r = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(2), try_get(&c, "src", "obj")).await
    });
    assert!(
        r.is_err(),
        "a GET through a timeout toxic finished within 2 s: {:?}",
        r.map(|r| r.map(|b| b.len()))
    );
    assert!(t.elapsed() >= Duration::from_secs(2));
    p.remove_toxic(&name);
    let got = rt
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(20), try_get(&c, "src", "obj")).await
        })
        .expect("the GET after removing the toxic did not finish within 20 s")
        .expect("the GET after removing the toxic failed");
    assert_eq!(got, body);
}

#[test]
fn toxiproxy_disabled_proxy_refuses_connections_until_enabled() {
    let body = data(10_000, 3);
    let m = minio_with("obj", &body);
    let tp = Toxiproxy::start();
    let p = tp.proxy("minio", &m.endpoint);
    let rt = rt();
    let c = s3_client_with(&p.endpoint, |b| b.retry_config(RetryConfig::disabled()));
    assert_eq!(rt.block_on(get(&c, "src", "obj")), body);

    p.disable();
    let e = std::net::TcpStream::connect(&p.listen).expect_err("connected to a disabled proxy");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    let r = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(20), try_get(&c, "src", "obj")).await
    });
    let err = r
        .expect("a GET to a disabled proxy hung")
        .expect_err("a GET through a disabled proxy succeeded");
    assert!(err.contains("DispatchFailure"), "{err}");

    p.enable();
    std::net::TcpStream::connect(&p.listen).expect("connect after re-enabling");
    let c2 = s3_client(&p.endpoint); // the default retries ride over a stale pooled connection
    assert_eq!(rt.block_on(get(&c2, "src", "obj")), body);

    // An outage: refused now, served again once it is over.
    let t = Instant::now();
    let over = p.outage(Duration::from_secs(1));
    assert!(std::net::TcpStream::connect(&p.listen).is_err());
    over.join().unwrap();
    assert!(t.elapsed() >= Duration::from_secs(1));
    assert_eq!(rt.block_on(get(&c2, "src", "obj")), body);
    // Reset leaves everything enabled and toxic-free.
    p.toxic(Stream::Upstream, Toxic::ResetPeer { timeout_ms: 0 });
    p.disable();
    tp.reset();
    assert!(p.toxics().is_empty());
    assert_eq!(rt.block_on(get(&c2, "src", "obj")), body);
}

#[test]
fn toxiproxy_accepts_every_toxic_kind() {
    let m = Minio::start();
    let tp = Toxiproxy::start();
    let p = tp.proxy("minio", &m.endpoint);
    let all = [
        Toxic::Latency {
            latency_ms: 10,
            jitter_ms: 5,
        },
        Toxic::Bandwidth { kb_per_s: 10_000 },
        Toxic::ResetPeer { timeout_ms: 100 },
        Toxic::Timeout { timeout_ms: 100 },
        Toxic::Slicer {
            average_size: 64,
            size_variation: 32,
            delay_us: 10,
        },
        Toxic::LimitData { bytes: 1_000_000 },
        Toxic::SlowClose { delay_ms: 10 },
    ];
    for (i, t) in all.iter().enumerate() {
        let stream = if i % 2 == 0 {
            Stream::Upstream
        } else {
            Stream::Downstream
        };
        p.add_toxic(&format!("t{i}"), stream, 0.5, t.clone());
    }
    let mut names = p.toxics();
    names.sort();
    assert_eq!(
        names,
        (0..all.len()).map(|i| format!("t{i}")).collect::<Vec<_>>()
    );
    p.clear_toxics();
    assert!(p.toxics().is_empty());
    // A slow and sliced, but whole, link still carries S3 correctly.
    p.toxic(
        Stream::Downstream,
        Toxic::Slicer {
            average_size: 1000,
            size_variation: 500,
            delay_us: 50,
        },
    );
    p.toxic(Stream::Upstream, Toxic::Bandwidth { kb_per_s: 2_000 });
    let c = s3_client(&p.endpoint);
    let body = data(500_000, 4);
    rt().block_on(async {
        create_bucket(&c, "bkt").await;
        put(&c, "bkt", "k", body.clone()).await;
        assert_eq!(md5_hex(&get(&c, "bkt", "k").await), md5_hex(&body));
    });
}

#[test]
fn flip_proxy_corrupts_exactly_one_byte_of_one_body() {
    let body = data(1 << 20, 5);
    let m = minio_with("obj", &body);
    let fp = FlipProxy::start(&m.endpoint);
    // No client-side checksum validation: the test wants to see the bytes that arrived.
    let c = s3_client_with(&fp.endpoint, |b| {
        b.response_checksum_validation(ResponseChecksumValidation::WhenRequired)
    });
    let rt = rt();
    // Disarmed: intact, and requests with and without bodies pass (PUT, HEAD, LIST).
    assert_eq!(rt.block_on(get(&c, "src", "obj")), body);
    rt.block_on(put(&c, "src", "other", data(5000, 6)));
    assert_eq!(fp.flips(), 0);

    fp.arm(1);
    let got = rt.block_on(get(&c, "src", "obj"));
    assert_eq!(got.len(), body.len());
    let diffs: Vec<usize> = (0..body.len()).filter(|&i| got[i] != body[i]).collect();
    assert_eq!(diffs.len(), 1, "differing offsets: {diffs:?}");
    assert_eq!(got[diffs[0]], body[diffs[0]] ^ 0xFF);
    assert_eq!(fp.flips(), 1);
    assert_eq!(fp.armed(), 0);

    assert_eq!(rt.block_on(get(&c, "src", "obj")), body, "second GET");
    assert_eq!(fp.flips(), 1);
}

#[test]
fn flip_proxy_follows_keep_alive_past_heads_and_small_bodies() {
    let body = data(200_000, 7);
    let m = minio_with("obj", &body);
    let fp = FlipProxy::start(&m.endpoint);
    let c = s3_client_with(&fp.endpoint, |b| {
        b.response_checksum_validation(ResponseChecksumValidation::WhenRequired)
    });
    let rt = rt();
    // Only bodies of 100 kB and more: the HEAD (a Content-Length but no body) and the
    // listing (a small body) on the same keep-alive connection pass intact; the GET after
    // them is the one flipped.
    fp.arm_min(1, 100_000);
    rt.block_on(async {
        for _ in 0..3 {
            let h = c
                .head_object()
                .bucket("src")
                .key("obj")
                .send()
                .await
                .unwrap();
            assert_eq!(h.content_length(), Some(body.len() as i64));
            assert_eq!(keys(&c, "src", "").await, vec!["obj".to_string()]);
        }
    });
    assert_eq!(fp.flips(), 0);
    let got = rt.block_on(get(&c, "src", "obj"));
    let diffs = (0..body.len()).filter(|&i| got[i] != body[i]).count();
    assert_eq!((diffs, fp.flips()), (1, 1));
    // 7 requests on at most 3 connections: one carried at least 3 in a row.
    assert!(
        fp.connections() <= 3,
        "{} connections for 7 requests: keep-alive was not exercised",
        fp.connections()
    );
    // The default client, validating the object's checksum, notices a flip.
    let strict = s3_client(&fp.endpoint);
    fp.arm_min(1, 100_000);
    let r = rt.block_on(async {
        strict
            .get_object()
            .bucket("src")
            .key("obj")
            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
    });
    assert_eq!(fp.flips(), 2);
    assert!(r.is_err(), "a flipped body passed checksum validation");
}

/// Reads one HTTP response (head and Content-Length body; none for HEAD) from `s`.
fn read_response(s: &mut std::net::TcpStream, head_request: bool) -> (String, Vec<u8>) {
    use std::io::Read;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).expect("response head");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).expect("the head is text");
    let len: usize = head
        .to_ascii_lowercase()
        .lines()
        .find_map(|l| {
            l.strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("a Content-Length");
    let mut body = vec![0u8; if head_request { 0 } else { len }];
    s.read_exact(&mut body).expect("response body");
    (head, body)
}

#[test]
fn flip_proxy_pairs_keep_alive_responses_with_their_requests() {
    use std::io::Write;
    // HtmlServer answers HEAD with a Content-Length and no body, on one keep-alive
    // connection: the flip must skip the HEAD's (absent) body and land in the next GET's.
    let html = HtmlServer::start(200);
    let fp = FlipProxy::start(&html.endpoint);
    let (_, page) = {
        let mut s =
            std::net::TcpStream::connect(fp.endpoint.trim_start_matches("http://")).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        read_response(&mut s, false)
    };
    fp.arm(1);
    let mut s = std::net::TcpStream::connect(fp.endpoint.trim_start_matches("http://")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // Pipelined: HEAD, a POST with a body, GET, GET, all written before any is answered.
    s.write_all(
        b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n\
          POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
          GET / HTTP/1.1\r\nHost: x\r\n\r\n\
          GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    let (h0, b0) = read_response(&mut s, true);
    assert!(h0.starts_with("HTTP/1.1 200 "), "{h0}");
    assert!(b0.is_empty());
    let (h1, b1) = read_response(&mut s, false);
    assert!(h1.starts_with("HTTP/1.1 200 "), "{h1}");
    let diffs: Vec<usize> = (0..page.len()).filter(|&i| b1[i] != page[i]).collect();
    assert_eq!(
        diffs,
        vec![page.len() / 2],
        "the POST's answer, flipped mid-body"
    );
    let (h2, b2) = read_response(&mut s, false);
    assert!(h2.starts_with("HTTP/1.1 200 "), "{h2}");
    assert_eq!(b2, page);
    let (_, b3) = read_response(&mut s, false);
    assert_eq!(b3, page);
    assert_eq!((fp.flips(), fp.armed(), fp.connections()), (1, 0, 2));
}

#[test]
fn snapferry_syncs_through_a_slow_toxiproxy_link() {
    let m = Minio::start();
    let c = m.client();
    let objects: Vec<(String, Vec<u8>)> = vec![
        ("p/a".into(), data(0, 10)),
        ("p/b".into(), data(1, 11)),
        ("p/dir/c".into(), data(70_000, 12)),
        ("p/dir/d".into(), data(3 << 20, 13)),
    ];
    rt().block_on(async {
        create_bucket(&c, "src").await;
        for (k, v) in &objects {
            put(&c, "src", k, v.clone()).await;
        }
        put(&c, "src", "elsewhere", vec![9]).await;
    });
    let tp = Toxiproxy::start();
    let p = tp.proxy("minio", &m.endpoint);
    p.toxic(
        Stream::Downstream,
        Toxic::Latency {
            latency_ms: 50,
            jitter_ms: 20,
        },
    );
    p.toxic(
        Stream::Upstream,
        Toxic::Latency {
            latency_ms: 20,
            jitter_ms: 10,
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("copy");
    let mut cmd = snapferry();
    cmd.args(["sync", "s3://src/p"]).arg(&dest).args([
        "--src-endpoint",
        &p.endpoint,
        "--progress",
        "never",
    ]);
    let t = Instant::now();
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "{:?}", texts(&out));
    assert!(
        t.elapsed() >= Duration::from_millis(70),
        "a run through the slow link took {:?}",
        t.elapsed()
    );
    let mut files = Vec::new();
    let mut stack = vec![dest.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(&dest).unwrap().to_string_lossy();
                files.push(format!("p/{rel}"));
            }
        }
    }
    files.sort();
    let mut want: Vec<String> = objects.iter().map(|(k, _)| k.clone()).collect();
    want.sort();
    assert_eq!(files, want);
    for (k, v) in &objects {
        let got = std::fs::read(dest.join(&k[2..])).unwrap();
        assert_eq!(md5_hex(&got), md5_hex(v), "{k}");
    }
}
