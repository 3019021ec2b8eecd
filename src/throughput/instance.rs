//! The network bandwidth of the EC2 instance this runs on, as Mountpoint derives its default
//! throughput target: the instance type from the instance metadata service (IMDSv2), looked
//! up in a table of the types whose bandwidth EC2 publishes as one figure ("up to N" types
//! are left out: their sustained figure is lower and not published). Off EC2, with
//! `AWS_EC2_METADATA_DISABLED=true`, or for a type not in the table, there is none.

use std::time::Duration;

use tracing::debug;

/// How long the metadata service has to answer each step (token, then instance type). The
/// lookup runs beside the mount, so a machine without one only waits in the background.
const IMDS_TIMEOUT: Duration = Duration::from_secs(1);

/// Instance types and their network bandwidth in Gbps, from EC2's published specifications.
const BANDWIDTH_GBPS: &[(&str, f64)] = &[
    ("c5n.18xlarge", 100.0),
    ("c5n.metal", 100.0),
    ("c6gn.16xlarge", 100.0),
    ("c6in.32xlarge", 200.0),
    ("c6in.metal", 200.0),
    ("c7gn.16xlarge", 200.0),
    ("dl1.24xlarge", 400.0),
    ("g4dn.metal", 100.0),
    ("g5.48xlarge", 100.0),
    ("g6.48xlarge", 100.0),
    ("g6e.48xlarge", 400.0),
    ("inf2.48xlarge", 100.0),
    ("m6in.32xlarge", 200.0),
    ("p3dn.24xlarge", 100.0),
    ("p4d.24xlarge", 400.0),
    ("p4de.24xlarge", 400.0),
    ("p5.48xlarge", 3200.0),
    ("p5e.48xlarge", 3200.0),
    ("p5en.48xlarge", 3200.0),
    ("trn1.32xlarge", 800.0),
    ("trn1n.32xlarge", 1600.0),
];

/// The published bandwidth of `instance_type`, if it is one figure we know.
pub fn bandwidth_gbps(instance_type: &str) -> Option<f64> {
    BANDWIDTH_GBPS
        .iter()
        .find(|(name, _)| *name == instance_type)
        .map(|(_, gbps)| *gbps)
}

/// Whether `AWS_EC2_METADATA_DISABLED` turns the metadata service off (`true`, any case), as
/// the SDK reads it.
pub fn metadata_disabled(value: Option<&str>) -> bool {
    value.is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// The instance type, asked of the metadata service (its endpoint from
/// `AWS_EC2_METADATA_SERVICE_ENDPOINT`, as the SDK reads it); `None` off EC2.
pub async fn instance_type() -> Option<String> {
    let client = aws_config::imds::Client::builder()
        .max_attempts(1)
        .connect_timeout(IMDS_TIMEOUT)
        .read_timeout(IMDS_TIMEOUT)
        .build();
    match client.get("/latest/meta-data/instance-type").await {
        Ok(answer) => {
            let name: String = answer.into();
            let name = name.trim().to_string();
            // An answer that is not a type name is no answer (and is not logged whole).
            let plausible = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
            plausible.then_some(name)
        }
        Err(e) => {
            debug!("no instance type from the instance metadata service: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_types_have_one_figure_and_others_none() {
        assert_eq!(bandwidth_gbps("p5.48xlarge"), Some(3200.0));
        assert_eq!(bandwidth_gbps("trn1.32xlarge"), Some(800.0));
        assert_eq!(bandwidth_gbps("m5.large"), None, "an 'up to' type");
        assert_eq!(bandwidth_gbps(""), None);
        let mut names: Vec<_> = BANDWIDTH_GBPS.iter().map(|(n, _)| n).collect();
        let count = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), count, "each type once");
    }

    #[test]
    fn disabled_as_the_sdk_reads_it() {
        assert!(metadata_disabled(Some("true")));
        assert!(metadata_disabled(Some("TRUE")));
        assert!(!metadata_disabled(Some("false")));
        assert!(!metadata_disabled(None));
    }
}
