//! How the value of each flag is read, with Mountpoint's forms: bucket names and `s3://`
//! URIs, octal modes, sizes, TTLs (`SECONDS|indefinite|minimal`), KMS key ARNs. Each error
//! is a short phrase clap puts after the flag's name.

use std::time::Duration;

/// The `<BUCKET>` argument: a name (or an access point / Outposts ARN), or an
/// `s3://bucket/prefix/` URI, which also gives the prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketArg {
    /// The bucket name or ARN.
    pub name: String,
    /// The prefix an `s3://` URI named (empty, or ending in `/`); `None` for a plain name.
    pub uri_prefix: Option<String>,
}

impl std::fmt::Display for BucketArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

/// Reads `<BUCKET>` as Mountpoint does: `s3://NAME[/PREFIX/]`, an ARN, or a name of 3 to 255
/// letters, digits, `.`, `_` and `-` (S3 itself refuses names it does not serve).
pub fn parse_bucket(s: &str) -> Result<BucketArg, String> {
    if let Some(rest) = s.strip_prefix("s3://") {
        let (name, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if name.starts_with("arn:") || !is_bucket_name(name) {
            return Err(format!(
                "'{s}': the bucket must have a valid name (letters, digits, '.', '_' and '-'); ARNs are not supported in s3:// URIs"
            ));
        }
        if !prefix.is_empty() && !prefix.ends_with('/') {
            return Err(format!(
                "'{s}': invalid bucket prefix (a prefix must end with '/')"
            ));
        }
        return Ok(BucketArg {
            name: name.to_string(),
            uri_prefix: Some(prefix.to_string()),
        });
    }
    if s.starts_with("arn:") && s.len() <= 2048 && !s.chars().any(char::is_control) {
        return Ok(BucketArg {
            name: s.to_string(),
            uri_prefix: None,
        });
    }
    if is_bucket_name(s) {
        return Ok(BucketArg {
            name: s.to_string(),
            uri_prefix: None,
        });
    }
    Err(format!(
        "'{s}' is not a bucket name (3-255 letters, digits, '.', '_' and '-'), an ARN or an s3:// URI"
    ))
}

/// Mountpoint's bucket name rule: `[0-9a-zA-Z._-]{3,255}`.
pub fn is_bucket_name(name: &str) -> bool {
    (3..=255).contains(&name.len())
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// An octal permission mode of at most 0777 (`0755`, `755` or `0o755`).
pub fn parse_mode(s: &str) -> Result<u16, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    match u16::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err(format!("'{s}' is not an octal mode between 0 and 0777")),
    }
}

/// Largest part: S3's limit for one part or one PUT.
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;

/// S3's smallest part of a multipart upload (but the last).
pub const MIN_WRITE_PART_SIZE: u64 = 5 * 1024 * 1024;

/// A part size in bytes, from 1 to 5 GiB (as Mountpoint: a small size is legal for reads;
/// a write part size below S3's 5 MiB minimum is refused where it is used, see `validate`).
pub fn parse_part_size(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if (1..=MAX_PART_SIZE).contains(&n) => Ok(n),
        _ => Err(format!(
            "'{s}' is not a part size in bytes between 1 and {MAX_PART_SIZE} (5 GiB)"
        )),
    }
}

/// A metadata TTL as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// `minimal`.
    Minimal,
    /// `indefinite`.
    Indefinite,
    /// A number of seconds.
    Seconds(u64),
}

impl Ttl {
    /// The duration the filesystem trusts a cached answer for.
    pub fn duration(self) -> Duration {
        match self {
            Ttl::Minimal => super::MINIMAL_TTL,
            Ttl::Indefinite => Duration::MAX,
            Ttl::Seconds(n) => Duration::from_secs(n),
        }
    }
}

/// `SECONDS|indefinite|minimal`. `0` is `minimal`, as Mountpoint reads it.
pub fn parse_ttl(s: &str) -> Result<Ttl, String> {
    match s {
        "indefinite" => Ok(Ttl::Indefinite),
        "minimal" | "0" => Ok(Ttl::Minimal),
        _ => s
            .parse::<u64>()
            .map(Ttl::Seconds)
            .map_err(|_| format!("'{s}' is not a number of seconds, 'indefinite' or 'minimal'")),
    }
}

/// A KMS key ARN (`arn:…:key/…`); key ids and aliases are refused, as by Mountpoint.
pub fn parse_kms_key_arn(s: &str) -> Result<String, String> {
    if s.starts_with("arn:") && s.contains(":key") && is_header_value(s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "'{s}' is not a KMS key ARN (key ids, aliases and alias ARNs are not accepted)"
        ))
    }
}

/// A value that goes into an HTTP header as it is (printable ASCII, at most 1 KiB).
pub fn parse_header_value(s: &str) -> Result<String, String> {
    if is_header_value(s) && !s.is_empty() {
        Ok(s.to_string())
    } else {
        Err(format!(
            "'{}' cannot be sent in an HTTP header (printable ASCII, at most 1024 characters)",
            s.escape_debug()
        ))
    }
}

fn is_header_value(s: &str) -> bool {
    s.len() <= 1024 && s.bytes().all(|c| (0x20..0x7f).contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_uris_as_mountpoint_reads_them() {
        let plain = |name: &str| {
            Ok(BucketArg {
                name: name.into(),
                uri_prefix: None,
            })
        };
        let uri = |name: &str, prefix: &str| {
            Ok(BucketArg {
                name: name.into(),
                uri_prefix: Some(prefix.into()),
            })
        };
        assert_eq!(parse_bucket("bucket"), plain("bucket"));
        assert_eq!(parse_bucket("Old_Style.Bucket"), plain("Old_Style.Bucket"));
        assert_eq!(parse_bucket("s3://bucket"), uri("bucket", ""));
        assert_eq!(parse_bucket("s3://bucket/"), uri("bucket", ""));
        assert_eq!(parse_bucket("s3://bucket/a/b/"), uri("bucket", "a/b/"));
        let mrap = "arn:aws:s3::00000000:accesspoint/s3-bucket-test.mrap";
        assert_eq!(parse_bucket(mrap), plain(mrap));
        let outposts = "arn:aws:s3-outposts:us-east-1:555555555555:outpost/o/accesspoint/a";
        assert_eq!(parse_bucket(outposts), plain(outposts));
        for bad in [
            "ab",
            "bucket/",
            "s3://bucket/prefix",
            "s3://arn:aws:s3:::x/",
            "s3://",
            "spa ce",
            &"a".repeat(256),
        ] {
            let err = parse_bucket(bad).unwrap_err();
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn ttls_sizes_and_keys() {
        assert_eq!(parse_ttl("minimal"), Ok(Ttl::Minimal));
        assert_eq!(parse_ttl("0"), Ok(Ttl::Minimal));
        assert_eq!(parse_ttl("indefinite"), Ok(Ttl::Indefinite));
        assert_eq!(parse_ttl("30"), Ok(Ttl::Seconds(30)));
        assert!(parse_ttl("-1").is_err() && parse_ttl("soon").is_err());
        assert_eq!(parse_part_size("1"), Ok(1));
        assert!(parse_part_size("0").is_err() && parse_part_size("5368709121").is_err());
        let arn = "arn:aws:kms:eu-west-1:151381207180:key/dabe1478-fe48-47ca-b6f8-ca044b643a82";
        assert_eq!(parse_kms_key_arn(arn).as_deref(), Ok(arn));
        for bad in [
            "",
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            "alias/ExampleAlias",
            "arn:aws:kms:us-west-2:111122223333:alias/ExampleAlias",
        ] {
            assert!(parse_kms_key_arn(bad).is_err(), "{bad}");
        }
        assert!(parse_header_value("ok/1.0").is_ok());
        assert!(parse_header_value("line\nbreak").is_err());
    }
}
