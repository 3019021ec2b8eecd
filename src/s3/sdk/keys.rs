//! How keys travel on the wire: listings ask for them url-encoded (XML 1.0 cannot carry
//! every control character), and `x-amz-copy-source` carries them percent-encoded.

/// A key as S3 sends it with `encoding-type=url`: `%XX` escapes and `+` for a space. A
/// malformed escape is kept as it is; bytes that do not form UTF-8 are replaced.
pub(super) fn url_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let escaped = match bytes.get(at..at + 3) {
            Some([b'%', hi, lo]) => hex(*hi).zip(hex(*lo)).map(|(h, l)| (h * 16 + l) as u8),
            _ => None,
        };
        match (escaped, bytes[at]) {
            (Some(byte), _) => {
                out.push(byte);
                at += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                at += 1;
            }
            (None, byte) => {
                out.push(byte);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// URL-encodes a key for `x-amz-copy-source` (everything but unreserved characters and `/`).
pub(super) fn encode_copy_source(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for byte in key.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_keys_are_url_decoded() {
        assert_eq!(url_decode("a%1B%5B31m+b%2Bc%2Fd"), "a\x1b[31m b+c/d");
        assert_eq!(url_decode("%C3%BC%E2%9C%93"), "ü✓");
        assert_eq!(url_decode("bad%zzend%4"), "bad%zzend%4");
        assert_eq!(url_decode(""), "");
    }

    #[test]
    fn copy_source_is_percent_encoded() {
        assert_eq!(encode_copy_source("a/b c+d.txt"), "a/b%20c%2Bd.txt");
        assert_eq!(encode_copy_source("ünï"), "%C3%BCn%C3%AF");
    }

    proptest::proptest! {
        #![proptest_config(crate::testing::fuzz_config())]
        #[test]
        fn untrusted_listed_keys_decode_without_panic(raw in "\\PC{0,40}|[%+0-9a-fA-Fzg]{0,20}") {
            let _ = url_decode(&raw);
        }

        #[test]
        fn untrusted_encoded_bytes_decode_to_what_was_sent(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40)) {
            let encoded: String = bytes.iter().map(|b| format!("%{b:02X}")).collect();
            proptest::prop_assert_eq!(url_decode(&encoded), String::from_utf8_lossy(&bytes).into_owned());
            if let Ok(text) = std::str::from_utf8(&bytes) {
                // What the copy source header carries decodes back to the key.
                proptest::prop_assert_eq!(url_decode(&encode_copy_source(text)), text);
            }
        }
    }
}
