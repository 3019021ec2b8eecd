//! Tests of the GET's own exchange: its parsing, and every answer it must decline, against
//! a scripted HTTP server on loopback.

use super::*;
use crate::s3::sdk::scripted_server::{Reply, partial, reply, scripted, scripted_tls, testdata};

#[test]
fn http_endpoints_and_https_ones_with_tls_get_the_exchange() {
    let d = Duration::from_secs(1);
    let exchange =
        |url: Option<&str>, tls: Option<Tls>| DirectGet::for_endpoint(url, || tls, None, (d, d));
    assert!(exchange(Some("http://127.0.0.1:9000"), None).is_some());
    assert!(exchange(Some("HTTP://s3.local"), None).is_some());
    assert!(
        exchange(Some("https://127.0.0.1:9000"), None).is_none(),
        "https needs TLS"
    );
    assert!(exchange(Some("https://127.0.0.1:9000"), Some(test_tls())).is_some());
    assert!(exchange(None, None).is_none());
    assert!(exchange(Some("http:/"), None).is_none());
    assert!(exchange(Some("ftp://h"), Some(test_tls())).is_none());
    // TLS is set up for https only (loading the system's certificates costs).
    let no_tls = || -> Option<Tls> { panic!("TLS set up for an http:// endpoint") };
    assert!(DirectGet::for_endpoint(Some("http://h"), no_tls, None, (d, d)).is_some());
}

/// TLS trusting the test CA.
fn test_tls() -> Tls {
    Tls::trusting(Some(&testdata("ca.pem"))).unwrap()
}

fn exchange() -> DirectGet {
    exchange_waiting(PATIENT)
}

/// Waits of the exchanges that expect answers: long enough for a loaded CI machine.
const PATIENT: Duration = Duration::from_secs(10);

/// An exchange that gives up on a silent server after `wait`.
fn exchange_waiting(wait: Duration) -> DirectGet {
    DirectGet::for_endpoint(Some("http://unused"), || None, None, (wait, wait)).unwrap()
}

/// Fetches `len` bytes from 5 of `http://addr/b/k` (`https://` if the exchange has TLS),
/// pinned to ETag `"e"`.
async fn fetch(exchange: &DirectGet, addr: &str, len: u64) -> (Fetched, Vec<u8>) {
    let mut out = BodyBuffer::with_capacity(len as usize);
    let headers = [("range".to_string(), format!("bytes=5-{}", 5 + len - 1))];
    let scheme = if exchange.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let uri = format!("{scheme}://{addr}/b/k?X-Amz-Signature=s");
    let fetched = exchange
        .fetch(&uri, &headers, (5, len), Some("\"e\""), &mut out)
        .await;
    (fetched, out.freeze().to_vec())
}

/// The exchange of an `https://` endpoint trusting the CA `ca` of `testdata/`.
fn tls_exchange(ca: &str) -> DirectGet {
    let d = PATIENT;
    let tls = Tls::trusting(Some(&testdata(ca))).unwrap();
    DirectGet::for_endpoint(Some("https://unused"), || Some(tls), None, (d, d)).unwrap()
}

#[tokio::test]
async fn a_partial_answer_is_read_whole_and_its_connection_kept() {
    let request = two_gets_on_one_connection(false).await;
    assert!(request.contains("range: bytes=5-14\r\n"), "{request}");
}

/// Two GETs through the exchange (over TLS if `tls`), each answered with a partial answer:
/// both read whole, on one connection; the first request's text.
async fn two_gets_on_one_connection(tls: bool) -> String {
    let replies = vec![
        reply(partial(5, 10, b"0123456789")),
        reply(partial(5, 10, b"abcdefghij")),
    ];
    let ((addr, seen), ex) = match tls {
        true => (scripted_tls(replies).await, tls_exchange("ca.pem")),
        false => (scripted(replies).await, exchange()),
    };
    for want in [b"0123456789", b"abcdefghij"] {
        assert_eq!(fetch(&ex, &addr, 10).await, (Fetched::Whole, want.to_vec()));
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.connections, 1, "the second GET reuses the connection");
    let request = seen.requests[0].clone();
    assert!(
        request.starts_with("GET /b/k?X-Amz-Signature=s HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(request.contains(&format!("host: {addr}\r\n")), "{request}");
    request
}

#[tokio::test]
async fn a_kept_connection_the_server_closed_is_replaced() {
    let (addr, seen) = scripted(vec![
        Reply {
            bytes: partial(5, 4, b"wxyz"),
            later: Vec::new(),
            close: true, // without saying so: the kept connection is dead
        },
        reply(partial(5, 4, b"abcd")),
    ])
    .await;
    let ex = exchange();
    assert_eq!(fetch(&ex, &addr, 4).await.0, Fetched::Whole);
    assert_eq!(
        fetch(&ex, &addr, 4).await,
        (Fetched::Whole, b"abcd".to_vec())
    );
    assert_eq!(seen.lock().unwrap().connections, 2);
}

#[tokio::test]
async fn answers_it_cannot_vouch_for_are_declined_and_nothing_appended() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "not 206",
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nabcd".to_vec(),
        ),
        (
            "not 206",
            b"HTTP/1.1 416 Range Not Satisfiable\r\nContent-Length: 0\r\n\r\n".to_vec(),
        ),
        (
            "not 206",
            b"HTTP/1.1 503 Slow Down\r\nContent-Length: 0\r\n\r\n".to_vec(),
        ),
        (
            "not the range asked",
            b"HTTP/1.1 206 x\r\nContent-Length: 4\r\nContent-Range: bytes 6-9/100\r\n\
              ETag: \"e\"\r\n\r\nabcd"
                .to_vec(),
        ),
        (
            "not the range asked",
            b"HTTP/1.1 206 x\r\nContent-Length: 5\r\nContent-Range: bytes 5-8/100\r\n\
              ETag: \"e\"\r\n\r\nabcde"
                .to_vec(),
        ),
        (
            "not the range asked",
            b"HTTP/1.1 206 x\r\nContent-Range: bytes 5-8/100\r\nETag: \"e\"\r\n\r\nabcd".to_vec(),
        ),
        (
            "another ETag",
            b"HTTP/1.1 206 x\r\nContent-Length: 4\r\nContent-Range: bytes 5-8/100\r\n\
              ETag: \"f\"\r\n\r\nabcd"
                .to_vec(),
        ),
        (
            "a transfer coding",
            b"HTTP/1.1 206 x\r\nTransfer-Encoding: chunked\r\nContent-Range: bytes 5-8/100\r\n\
              ETag: \"e\"\r\n\r\n4\r\nabcd\r\n0\r\n\r\n"
                .to_vec(),
        ),
    ];
    for (why, answer) in cases {
        let (addr, _) = scripted(vec![reply(answer.clone())]).await;
        let ex = exchange();
        let (fetched, got) = fetch(&ex, &addr, 4).await;
        let shown = String::from_utf8_lossy(&answer);
        assert_eq!(fetched, Fetched::Declined(why), "{shown}");
        assert!(got.is_empty(), "{shown}");
        assert!(ex.is_on(), "{shown}");
    }
}

#[tokio::test]
async fn malformed_heads_and_silence_are_declined_as_no_answer() {
    let garbage = b"SPDY/3 206\r\n\r\nabcd".to_vec();
    let lengths = b"HTTP/1.1 206 x\r\nContent-Length: 4\r\ncontent-length: 5\r\n\r\nabcd".to_vec();
    for answer in [garbage, lengths, vec![b'x'; MAX_HEAD + 10]] {
        let (addr, _) = scripted(vec![reply(answer)]).await;
        assert_eq!(
            fetch(&exchange(), &addr, 4).await.0,
            Fetched::Declined("no answer")
        );
    }
    // A server that never answers: declined after the no-progress wait.
    let (addr, _) = scripted(vec![]).await;
    let started = Instant::now();
    assert_eq!(
        fetch(&exchange_waiting(Duration::from_millis(300)), &addr, 4)
            .await
            .0,
        Fetched::Declined("no answer")
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // Nobody listening.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    assert_eq!(
        fetch(&exchange(), &addr, 4).await.0,
        Fetched::Declined("no answer")
    );
}

#[tokio::test]
async fn a_body_that_breaks_keeps_what_came_for_the_resume() {
    // 4 of the 10 bytes, then the connection ends.
    let (addr, _) = scripted(vec![Reply {
        bytes: partial(5, 10, b"0123"),
        later: Vec::new(),
        close: true,
    }])
    .await;
    let (fetched, got) = fetch(&exchange(), &addr, 10).await;
    assert_eq!(fetched, Fetched::Declined("the body broke"));
    assert_eq!(got, b"0123");
    // A body that stalls midway, likewise, after the no-progress wait.
    let (addr, _) = scripted(vec![reply(partial(5, 10, b"01234"))]).await;
    let (fetched, got) = fetch(&exchange_waiting(Duration::from_millis(300)), &addr, 10).await;
    assert_eq!(
        (fetched, got),
        (Fetched::Declined("the body broke"), b"01234".to_vec())
    );
    // A long body (read with a raised wake-up threshold) too, and the wait for the
    // threshold counts toward the no-progress wait.
    // (Its first 64 KiB only: they come at once, so the wait starts with the stall.)
    let body = long_body();
    let half = &body[..64 * 1024];
    let (addr, _) = scripted(vec![reply(partial(5, body.len() as u64, half))]).await;
    let started = Instant::now();
    let ex = exchange_waiting(Duration::from_millis(1000));
    let (fetched, got) = fetch(&ex, &addr, body.len() as u64).await;
    assert_eq!(
        (fetched, got),
        (Fetched::Declined("the body broke"), half.to_vec())
    );
    let waited = started.elapsed();
    assert!(waited < Duration::from_millis(1800), "{waited:?}");
}

/// A body long enough to be read with a raised wake-up threshold.
fn long_body() -> Vec<u8> {
    (0..LONG_BODY + WAKE_AT).map(|i| (i % 251) as u8).collect()
}

#[tokio::test]
async fn a_server_that_refuses_presigned_requests_turns_the_exchange_off() {
    let answer = |status: &str| {
        reply(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").into_bytes())
    };
    // Refusals and whole-object answers count; answers about the object or the moment
    // (404, 412, 416, 5xx) do not, and neither breaks the count (404 and 412 are final).
    let counted = [
        "400 Bad Request",
        "403 Forbidden",
        "405 x",
        "501 x",
        "200 OK",
    ];
    let ignored = ["404 Not Found", "412 x", "416 x", "503 Slow Down", "500 x"];
    let mut replies = Vec::new();
    // Whether each answer is final (404, 412: the read's error) or declined for the SDK.
    let mut finals = Vec::new();
    for i in 0..MAX_UNVOUCHED as usize {
        let status = ignored[i % ignored.len()];
        replies.push(answer(status));
        finals.push(status.starts_with("404") || status.starts_with("412"));
        replies.push(answer(counted[i % counted.len()]));
        finals.push(false);
    }
    let (addr, _) = scripted(replies).await;
    let ex = exchange();
    for (i, is_final) in finals.into_iter().enumerate() {
        assert!(ex.is_on(), "off after {i} answers");
        match fetch(&ex, &addr, 4).await.0 {
            Fetched::Failed(_) if is_final => {}
            Fetched::Declined("not 206") if !is_final => {}
            other => panic!("answer {i}: {other:?}, final: {is_final}"),
        }
    }
    assert!(
        !ex.is_on(),
        "still on after {MAX_UNVOUCHED} unusable answers"
    );
}

/// A long body whose end comes slowly (5 bytes every 1.5 s) is read as it comes, each piece
/// within the no-progress wait, though the end takes longer than it.
#[tokio::test]
async fn a_slow_body_is_read_as_it_comes() {
    let body = long_body();
    let (fast, slow) = body.split_at(body.len() - 15);
    let pause = Duration::from_millis(1500);
    let pieces = slow.chunks(5).map(|p| (pause, p.to_vec())).collect();
    let (addr, _) = scripted(vec![Reply {
        bytes: partial(5, body.len() as u64, fast),
        later: pieces,
        close: false,
    }])
    .await;
    let ex = exchange_waiting(Duration::from_secs(2));
    assert_eq!(
        fetch(&ex, &addr, body.len() as u64).await,
        (Fetched::Whole, body)
    );
}

/// After a body read with a raised wake-up threshold, the kept connection wakes for the next
/// answer's head, however short; plain and over TLS.
#[tokio::test]
async fn a_kept_connection_wakes_for_a_short_answer() {
    let body = long_body();
    for tls in [false, true] {
        let replies = vec![
            Reply {
                bytes: partial(5, body.len() as u64, b""),
                later: vec![(Duration::from_millis(50), body.clone())],
                close: false,
            },
            reply(b"HTTP/1.1 404 x\r\nContent-Length: 0\r\n\r\n".to_vec()),
        ];
        let ((addr, seen), ex) = match tls {
            true => (scripted_tls(replies).await, tls_exchange("ca.pem")),
            false => (scripted(replies).await, exchange()),
        };
        // Read whole without waiting for the slow-body fallback: the threshold was not more
        // than the socket had to receive.
        let started = Instant::now();
        let fetched = fetch(&ex, &addr, body.len() as u64).await;
        assert_eq!(fetched, (Fetched::Whole, body.clone()), "tls: {tls}");
        assert!(started.elapsed() < Duration::from_millis(900), "tls: {tls}");
        let started = Instant::now();
        assert_eq!(
            fetch(&ex, &addr, 4).await.0,
            Fetched::Failed(S3Error::NotFound)
        );
        assert!(started.elapsed() < Duration::from_millis(900), "tls: {tls}");
        assert_eq!(seen.lock().unwrap().connections, 1);
    }
}

/// A 404 or 412 is the object's final answer: taken as the error it says (the code read from
/// S3's error XML), the GET not sent again, and the connection kept when the body was read.
#[tokio::test]
async fn answers_about_the_object_are_final() {
    let error = |status: &str, code: &str| {
        let xml = format!(
            "<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>m</Message></Error>"
        );
        let head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n", xml.len());
        [head.into_bytes(), xml.into_bytes()]
    };
    let [gone_head, gone_body] = error("404 Not Found", "NoSuchKey");
    // This one's body comes after its head: it is read to its end.
    let [bucket_head, bucket_body] = error("404 Not Found", "NoSuchBucket");
    let [changed_head, changed_body] = error("412 Precondition Failed", "PreconditionFailed");
    let (addr, seen) = scripted(vec![
        reply([gone_head, gone_body].concat()),
        Reply {
            bytes: bucket_head,
            later: vec![(Duration::from_millis(50), bucket_body)],
            close: false,
        },
        reply([changed_head, changed_body].concat()),
        reply(partial(5, 4, b"abcd")),
    ])
    .await;
    let ex = exchange();
    let errors = [
        S3Error::NotFound,
        S3Error::NoSuchBucket,
        S3Error::PreconditionFailed,
    ];
    for error in errors {
        assert_eq!(fetch(&ex, &addr, 4).await, (Fetched::Failed(error), vec![]));
    }
    assert_eq!(
        fetch(&ex, &addr, 4).await,
        (Fetched::Whole, b"abcd".to_vec())
    );
    let (connections, requests) = {
        let seen = seen.lock().unwrap();
        (seen.connections, seen.requests.len())
    };
    assert_eq!(
        (connections, requests),
        (1, 4),
        "every error body was read and the connection kept"
    );
    // Without a length, the code is looked for in what came with the head, and the
    // connection is not kept.
    let (addr, seen) = scripted(vec![
        reply(b"HTTP/1.1 404 x\r\n\r\n<Error><Code>NoSuchBucket</Code></Error>".to_vec()),
        reply(b"HTTP/1.1 412 x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec()),
    ])
    .await;
    for error in [S3Error::NoSuchBucket, S3Error::PreconditionFailed] {
        assert_eq!(fetch(&ex, &addr, 4).await.0, Fetched::Failed(error));
    }
    assert_eq!(seen.lock().unwrap().connections, 2);
}

/// The SDK's store for the server at `addr` (`http://`, path style), with test credentials.
async fn store_of(addr: &str) -> super::super::SdkStore {
    let mut config = crate::s3::S3Config::new("b");
    config.region = Some("eu-west-1".into());
    config.endpoint_url = Some(format!("http://{addr}"));
    config.force_path_style = true;
    config.read_timeout = PATIENT;
    let mut store = super::super::SdkStore::with_http_client(&config, None).await;
    assert!(store.direct.is_some());
    let credentials = aws_sdk_s3::config::Credentials::new("AK", "SK", None, None, "test");
    let conf = store.client.config().to_builder();
    store.client = aws_sdk_s3::Client::from_conf(conf.credentials_provider(credentials).build());
    store
}

/// Through the store, a 412 to the exchange's GET is the read's error, without a second GET.
#[tokio::test]
async fn the_store_takes_a_final_answer_from_the_exchange() {
    use crate::s3::ObjectStore;
    let (addr, seen) = scripted(vec![
        reply(b"HTTP/1.1 412 x\r\nContent-Length: 0\r\n\r\n".to_vec()),
        reply(partial(5, 10, b"0123456789")),
    ])
    .await;
    let store = store_of(&addr).await;
    let got = store.get_range("k", 5..15, Some("\"e\"")).await;
    assert_eq!(got, Err(S3Error::PreconditionFailed));
    assert_eq!(seen.lock().unwrap().requests.len(), 1);
}

/// Through the store: the exchange's GET breaks after 4 bytes, and the SDK's GET fetches the
/// rest, from the byte where it stopped; every byte lands once, in order.
#[tokio::test]
async fn the_store_resumes_a_broken_exchange_through_the_sdk() {
    use crate::s3::ObjectStore;
    let (addr, seen) = scripted(vec![
        Reply {
            bytes: partial(5, 10, b"0123"),
            later: Vec::new(),
            close: true,
        },
        reply(partial(9, 6, b"456789")),
    ])
    .await;
    let store = store_of(&addr).await;
    let got = store.get_range("k", 5..15, Some("\"e\"")).await.unwrap();
    assert_eq!(&got[..], b"0123456789");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.requests.len(), 2, "{:?}", seen.requests);
    let (direct, sdk) = (&seen.requests[0], &seen.requests[1].to_ascii_lowercase());
    assert!(direct.contains("X-Amz-Signature="), "{direct}");
    let direct = direct.to_ascii_lowercase();
    assert!(!direct.contains("authorization:"), "{direct}");
    assert!(direct.contains("range: bytes=5-14\r\n"), "{direct}");
    assert!(
        direct.contains("if-match: \"e\"\r\n"),
        "the pin is sent: {direct}"
    );
    assert!(sdk.contains("authorization:"), "{sdk}");
    assert!(sdk.contains("range: bytes=9-14\r\n"), "{sdk}");
    assert!(sdk.contains("if-match: \"e\"\r\n"), "{sdk}");
}

#[tokio::test]
async fn an_etag_written_another_way_is_the_same_etag() {
    let unquoted = b"HTTP/1.1 206 x\r\nContent-Length: 4\r\nContent-Range: bytes 5-8/100\r\n\
                     ETag: e\r\n\r\nabcd";
    let (addr, _) = scripted(vec![reply(unquoted.to_vec())]).await;
    assert_eq!(
        fetch(&exchange(), &addr, 4).await,
        (Fetched::Whole, b"abcd".to_vec())
    );
}

/// A server whose partial answers never match turns the exchange off after a few GETs (each
/// was sent twice), and one answer taken between them starts the count again.
#[tokio::test]
async fn partial_answers_never_taken_turn_the_exchange_off() {
    let wrong = || reply(partial(6, 4, b"abcd")); // not the range asked
    let mut replies: Vec<Reply> = (0..MAX_UNVOUCHED - 1).map(|_| wrong()).collect();
    replies.push(reply(partial(5, 4, b"abcd")));
    replies.extend((0..MAX_UNVOUCHED).map(|_| wrong()));
    let (addr, _) = scripted(replies).await;
    let ex = exchange();
    for _ in 0..MAX_UNVOUCHED - 1 {
        assert_eq!(
            fetch(&ex, &addr, 4).await.0,
            Fetched::Declined("not the range asked")
        );
    }
    assert_eq!(fetch(&ex, &addr, 4).await.0, Fetched::Whole);
    for _ in 0..MAX_UNVOUCHED - 1 {
        fetch(&ex, &addr, 4).await;
        assert!(ex.is_on(), "the count started again after the answer taken");
    }
    fetch(&ex, &addr, 4).await;
    assert!(!ex.is_on());
}

#[tokio::test]
async fn over_tls_answers_are_read_whole_and_connections_kept() {
    two_gets_on_one_connection(true).await;
}

/// A server whose certificate the trust store does not vouch for, or that does not name the
/// host asked for, gets no request: the GET goes to the SDK's client (which refuses it too).
#[tokio::test]
async fn an_untrusted_or_misnamed_server_gets_no_request() {
    let (addr, seen) = scripted_tls(vec![reply(partial(5, 4, b"abcd"))]).await;
    let untrusted = tls_exchange("other-ca.pem");
    assert_eq!(
        fetch(&untrusted, &addr, 4).await.0,
        Fetched::Declined("no answer")
    );
    let port = addr.rsplit_once(':').unwrap().1;
    let misnamed = format!("localhost:{port}"); // the certificate names 127.0.0.1 only
    assert_eq!(
        fetch(&tls_exchange("ca.pem"), &misnamed, 4).await.0,
        Fetched::Declined("no answer")
    );
    assert!(
        seen.lock().unwrap().requests.is_empty(),
        "no request was sent"
    );
    // A plain exchange talking to a TLS server gets nothing it can read.
    assert_eq!(
        fetch(&exchange(), &addr, 4).await.0,
        Fetched::Declined("no answer")
    );
}

/// Which mounts use the exchange: http:// and https:// endpoints given on the command line,
/// unless --bind, --no-sign-request or a proxy in the environment says otherwise; AWS's own
/// endpoints (no URL) keep the SDK's client.
#[test]
fn the_exchange_is_for_signed_requests_to_a_given_endpoint_without_bind_or_proxy() {
    use super::super::direct_exchange_unless;
    use crate::s3::S3Config;
    let with = |url: Option<&str>, change: &dyn Fn(&mut S3Config)| {
        let mut config = S3Config::new("b");
        config.endpoint_url = url.map(str::to_string);
        change(&mut config);
        config
    };
    let none = |_: &mut S3Config| {};
    let http = with(Some("http://127.0.0.1:9000"), &none);
    assert!(direct_exchange_unless(&http, false).is_some());
    assert!(direct_exchange_unless(&http, true).is_none(), "a proxy");
    let bundle = |c: &mut S3Config| c.ca_bundle = Some(testdata("ca.pem"));
    let https = with(Some("https://127.0.0.1:9000"), &bundle);
    let exchange = direct_exchange_unless(&https, false).expect("https with a bundle");
    assert!(exchange.tls.is_some());
    let bind = |c: &mut S3Config| c.bind = vec!["lo".into()];
    assert!(direct_exchange_unless(&with(Some("http://h:1"), &bind), false).is_none());
    let unsigned = |c: &mut S3Config| c.no_sign_request = true;
    assert!(direct_exchange_unless(&with(Some("http://h:1"), &unsigned), false).is_none());
    assert!(
        direct_exchange_unless(&with(None, &none), false).is_none(),
        "AWS"
    );
}

/// Kept-alive connections are closed after IDLE_FOR unused (the server may have closed its
/// side, and each is a descriptor): none is reused past it, and the sweep closes them.
#[tokio::test]
async fn idle_connections_are_closed_after_a_while() {
    let (addr, seen) = scripted(vec![
        reply(partial(5, 4, b"abcd")),
        reply(partial(5, 4, b"efgh")),
    ])
    .await;
    let ex = exchange();
    assert_eq!(fetch(&ex, &addr, 4).await.0, Fetched::Whole);
    assert_eq!(ex.close_idle(), 1, "kept");
    // Virtual time only for the wait (paused while real sockets are awaited, the clock
    // would jump to the exchange's timeouts).
    tokio::time::pause();
    tokio::time::advance(IDLE_FOR).await;
    assert_eq!(ex.close_idle(), 0, "closed once idle for IDLE_FOR");
    tokio::time::resume();
    assert_eq!(
        fetch(&ex, &addr, 4).await,
        (Fetched::Whole, b"efgh".to_vec())
    );
    assert_eq!(seen.lock().unwrap().connections, 2, "a new connection");
}
