//! The rules every part of the system checks the same way: ensemble sizes, majorities, names
//! and addresses. The node's configuration, its services, the client and the operator all
//! call these, so a rule changes in one place.

use std::fmt;

/// Upper bound on voters (the ensemble sizes this system is built and tested for).
pub const MAX_VOTERS: usize = 9;

/// A majority of `voters`: the quorum of an ensemble of that many voting members.
pub const fn majority(voters: usize) -> usize {
    voters / 2 + 1
}

/// An ensemble size a user may ask for: odd, 1 to [`MAX_VOTERS`] (an even size tolerates no
/// more failures than the odd size below it, and needs a larger quorum).
pub const fn is_ensemble_size(voters: usize) -> bool {
    voters >= 1 && voters <= MAX_VOTERS && voters % 2 == 1
}

/// Longest member id: a DNS label (a StatefulSet pod's name is one), so 63 characters.
pub const MAX_MEMBER_ID_LEN: usize = 63;

/// Why a member id or an address is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NameError {
    MemberId(String),
    Address(String),
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::MemberId(id) => write!(
                f,
                "member id {id:?}: use 1-{MAX_MEMBER_ID_LEN} letters, digits, '-', '_' or '.'"
            ),
            NameError::Address(a) => write!(
                f,
                "address {a:?} is not host:port (a host name or IP address, and a port 1-65535)"
            ),
        }
    }
}

impl std::error::Error for NameError {}

/// A member id: 1-63 letters, digits, `-`, `_` or `.`.
pub fn check_member_id(id: &str) -> Result<(), NameError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_MEMBER_ID_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(NameError::MemberId(id.to_string()))
    }
}

/// Splits `host:port` (`[v6]:port` too), refusing an empty host and a port outside 1-65535.
pub fn split_host_port(address: &str) -> Result<(&str, u16), NameError> {
    let bad = || NameError::Address(address.to_string());
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok((host, port))
}

/// FNV-1a, 64-bit: a hash that is the same in every build and Rust version (for seeds and
/// for the operator's configuration checksum).
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Why a `{placeholder}` template could not be expanded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TemplateError {
    /// A `{` without its `}`.
    Unclosed,
    /// `{name}` is not a placeholder this template knows.
    Unknown(String),
    /// The placeholder is known but has no value here (the message says why).
    NoValue(String),
}

/// Expands every `{name}` in `template` with `value(name)`: `None` for an unknown name.
pub fn expand_template(
    template: &str,
    mut value: impl FnMut(&str) -> Option<Result<String, String>>,
) -> Result<String, TemplateError> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').ok_or(TemplateError::Unclosed)? + start;
        let name = &rest[start + 1..end];
        match value(name) {
            Some(Ok(v)) => out.push_str(&v),
            Some(Err(why)) => return Err(TemplateError::NoValue(why)),
            None => return Err(TemplateError::Unknown(name.to_string())),
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_of_each_ensemble_size() {
        let sizes: Vec<(usize, usize)> = (1..=MAX_VOTERS)
            .filter(|n| is_ensemble_size(*n))
            .map(|n| (n, majority(n)))
            .collect();
        assert_eq!(sizes, [(1, 1), (3, 2), (5, 3), (7, 4), (9, 5)]);
        assert!(!is_ensemble_size(0) && !is_ensemble_size(4) && !is_ensemble_size(11));
    }

    #[test]
    fn member_ids_are_dns_label_sized() {
        assert!(check_member_id("node1").is_ok());
        assert!(check_member_id(&"a".repeat(63)).is_ok());
        assert!(check_member_id(&"a".repeat(64)).is_err());
        assert!(check_member_id("").is_err());
        assert!(check_member_id("a b").is_err());
    }

    #[test]
    fn host_port_needs_a_host_and_a_port() {
        assert_eq!(split_host_port("127.0.0.1:7101"), Ok(("127.0.0.1", 7101)));
        assert_eq!(split_host_port("[::1]:7101"), Ok(("::1", 7101)));
        assert_eq!(split_host_port("gg-0.gg.ns.svc:7100").unwrap().1, 7100);
        for bad in ["", "host", ":7101", "host:0", "host:70000", "host:x"] {
            assert!(split_host_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fnv1a_is_the_published_function() {
        // Test vectors of the FNV reference: "" and "a".
        assert_eq!(fnv1a(*b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(*b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn templates_expand_known_placeholders_and_name_the_rest() {
        let value = |name: &str| match name {
            "pod" => Some(Ok("gg-1".to_string())),
            "ns" => Some(Err("set $POD_NAMESPACE".to_string())),
            _ => None,
        };
        assert_eq!(
            expand_template("{pod}.x:7100", value),
            Ok("gg-1.x:7100".into())
        );
        assert_eq!(expand_template("plain", value), Ok("plain".into()));
        assert_eq!(expand_template("{pod", value), Err(TemplateError::Unclosed));
        assert_eq!(
            expand_template("{what}", value),
            Err(TemplateError::Unknown("what".into()))
        );
        assert!(matches!(
            expand_template("{ns}", value),
            Err(TemplateError::NoValue(_))
        ));
    }
}
