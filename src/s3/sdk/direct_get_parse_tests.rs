//! Tests of the GET's own exchange's pure parts: the URL split, the head parser, the request
//! text and the authority's host and port.

use super::*;

#[test]
fn urls_split_into_authority_and_target() {
    assert_eq!(
        split_uri("http://127.0.0.1:9000/b/k?X-Amz-Signature=s", false),
        Some(("127.0.0.1:9000", "/b/k?X-Amz-Signature=s"))
    );
    assert_eq!(split_uri("http://h/", false), Some(("h", "/")));
    assert_eq!(split_uri("https://h/k", true), Some(("h", "/k")));
    assert_eq!(
        split_uri("https://h/k", false),
        None,
        "not the endpoint's scheme"
    );
    assert_eq!(split_uri("http://h/k", true), None);
    assert_eq!(split_uri("http://h", false), None);
    assert_eq!(split_uri("http:///k", false), None);
    assert_eq!(split_uri("ht", false), None);
}

#[test]
fn heads_are_read_for_what_the_exchange_needs() {
    let text = b"HTTP/1.1 206 Partial Content\r\nContent-Length: 10\r\n\
          content-range: bytes 5-14/100\r\nETag: \"e\"\r\nServer: x\r\n\r\nbody";
    let (head, length) = parse_head(text).unwrap().unwrap();
    assert_eq!(
        head,
        Head {
            status: 206,
            content_length: Some(10),
            content_range: Some((5, 14)),
            etag: Some("\"e\"".into()),
            chunked: false,
            close: false,
        }
    );
    assert_eq!(&text[length..], b"body");
    let closing = parse_head(b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    let (closing, _) = closing.unwrap().unwrap();
    assert!(closing.close && closing.chunked);
    let kept = b"HTTP/1.0 206 x\r\nConnection: keep-alive\r\n\r\n";
    assert!(!parse_head(kept).unwrap().unwrap().0.close);
    // Not whole yet.
    assert_eq!(
        parse_head(b"HTTP/1.1 206 x\r\nContent-Length: 1\r\n"),
        Ok(None)
    );
    assert_eq!(parse_head(b""), Ok(None));
    // Malformed.
    let two_lengths = b"HTTP/1.1 206 x\r\nContent-Length: 1\r\ncontent-length: 1\r\n\r\n";
    assert_eq!(parse_head(two_lengths), Err(()));
    assert_eq!(parse_head(b"HTTP/1.1 206 x\r\nno colon\r\n\r\n"), Err(()));
    assert_eq!(
        parse_head(b"HTTP/1.1 206 x\r\nContent-Length: ten\r\n\r\n"),
        Err(())
    );
    assert_eq!(parse_head(b"SPDY/3 206\r\n\r\n"), Err(()));
    assert_eq!(parse_head(b"HTTP/1.1 abc\r\n\r\n"), Err(()));
    assert_eq!(
        parse_head(&[0xff, 0xfe, b'\r', b'\n', b'\r', b'\n']),
        Err(())
    );
    let mut many = b"HTTP/1.1 206 x\r\n".to_vec();
    for i in 0..=MAX_HEADERS {
        many.extend_from_slice(format!("x-{i}: y\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(parse_head(&many), Err(()), "more headers than room for");
    assert_eq!(parse_content_range("bytes */100"), None);
}

#[test]
fn requests_carry_the_host_once_and_every_signed_header() {
    let text = request_text(
        "h:1",
        "/b/k?q",
        &[("range".into(), "bytes=0-9".into())],
        "job/7 mount-s3/1",
    );
    assert_eq!(
        text,
        "GET /b/k?q HTTP/1.1\r\nhost: h:1\r\nrange: bytes=0-9\r\nuser-agent: job/7 mount-s3/1\r\n\r\n"
    );
    let with_host = request_text("h:1", "/", &[("Host".into(), "h:1".into())], "a");
    assert_eq!(with_host.matches("h:1").count(), 1);
    let with_agent = request_text("h", "/", &[("User-Agent".into(), "job/7".into())], "a");
    assert_eq!(
        with_agent
            .to_ascii_lowercase()
            .matches("user-agent")
            .count(),
        1
    );
    assert!(with_agent.ends_with("user-agent: a\r\n\r\n"));
    let d = Duration::from_secs(1);
    let prefixed =
        DirectGet::for_endpoint(Some("http://h"), || None, Some("job/7"), (d, d)).unwrap();
    assert_eq!(
        prefixed.user_agent,
        concat!("job/7 mount-s3/", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn authorities_give_the_host_and_the_port_to_connect_to() {
    assert_eq!(host_and_port("h", false), Some(("h", 80)));
    assert_eq!(host_and_port("h", true), Some(("h", 443)));
    assert_eq!(host_and_port("h:9000", true), Some(("h", 9000)));
    assert_eq!(
        host_and_port("127.0.0.1:9000", false),
        Some(("127.0.0.1", 9000))
    );
    assert_eq!(host_and_port("[::1]", false), Some(("::1", 80)));
    assert_eq!(host_and_port("[::1]:9000", true), Some(("::1", 9000)));
    assert_eq!(host_and_port("h:port", false), None);
    assert_eq!(host_and_port("[::1", false), None);
}
