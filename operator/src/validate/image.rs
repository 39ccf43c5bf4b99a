//! Container image references, checked the way the container runtime will parse them.
//!
//! CEL only rejects spaces; a reference like `Partita/Node:1.0` or `node:` passes admission and
//! then fails on every kubelet as `InvalidImageName`, a pod stuck forever. Checking here turns
//! that into a condition on the set that names the problem.
//!
//! Grammar (the distribution reference grammar, simplified to what matters here):
//! `[domain[:port]/]path-component(/path-component)*[:tag][@algorithm:hex]`.

/// Why `reference` is not a valid image reference, or `None` when it is.
pub fn problem(reference: &str) -> Option<String> {
    if reference.is_empty() {
        return Some("it is empty".into());
    }
    if reference.len() > 512 {
        return Some("it is longer than 512 characters".into());
    }
    let (name_tag, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    if let Some(d) = digest
        && let Some(why) = digest_problem(d)
    {
        return Some(why);
    }
    // A tag is after the last ':' that follows the last '/'; a ':' before that is a port.
    let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_tag[last_slash..].find(':') {
        Some(i) => (
            &name_tag[..last_slash + i],
            Some(&name_tag[last_slash + i + 1..]),
        ),
        None => (name_tag, None),
    };
    if let Some(t) = tag
        && !valid_tag(t)
    {
        return Some(format!(
            "the tag {t:?} must be 1 to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'"
        ));
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    if parts.len() > 1 && looks_like_domain(parts[0]) {
        let domain = parts.remove(0);
        if let Some(why) = domain_problem(domain) {
            return Some(why);
        }
    }
    for part in parts {
        if !valid_path_component(part) {
            return Some(format!(
                "the name component {part:?} must be lowercase letters and digits, separated by '.', '_', '__' or dashes"
            ));
        }
    }
    None
}

fn looks_like_domain(first: &str) -> bool {
    first.contains('.')
        || first.contains(':')
        || first == "localhost"
        || first.bytes().any(|b| b.is_ascii_uppercase())
}

fn domain_problem(domain: &str) -> Option<String> {
    let (host, port) = match domain.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (domain, None),
    };
    if let Some(p) = port
        && (p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.len() > 5)
    {
        return Some(format!("the registry port {p:?} must be a number"));
    }
    let ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    (!ok).then(|| format!("the registry {host:?} is not a valid host name"))
}

fn valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(part: &str) -> bool {
    let bytes = part.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &part[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn digest_problem(digest: &str) -> Option<String> {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Some(format!(
            "the digest {digest:?} must look like sha256:<64 hex digits>"
        ));
    };
    let hex_ok = hex
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let len_ok = match algorithm {
        "sha256" => hex.len() == 64,
        "sha512" => hex.len() == 128,
        _ => {
            return Some(format!(
                "the digest algorithm {algorithm:?} must be sha256 or sha512"
            ));
        }
    };
    (!(hex_ok && len_ok))
        .then(|| format!("the digest {digest:?} has the wrong length or non-hex digits"))
}

#[cfg(test)]
mod tests {
    use super::problem;

    #[test]
    fn accepts_the_references_people_use() {
        for ok in [
            "partita-node",
            "partita/partita-node:0.1.0",
            "ghcr.io/acme/partita-node:v0.1.0-rc.1",
            "localhost:5000/partita-node",
            "registry.example.com:443/team/sub/partita_node:latest",
            "Registry.Example.com/a/b:1",
            "docker.io/library/redis@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "a__b/c-d--e:TAG_1",
        ] {
            assert_eq!(problem(ok), None, "{ok}");
        }
    }

    #[test]
    fn refuses_what_a_kubelet_would_refuse() {
        for (bad, says) in [
            ("", "empty"),
            ("Partita/Node:1.0", "name component"),
            ("partita-node:", "tag"),
            ("partita-node:.x", "tag"),
            ("partita//node", "name component"),
            ("partita/node-", "name component"),
            ("partita/no..de", "name component"),
            ("host:abc/x", "port"),
            ("-bad.example.com/x", "registry"),
            ("x@sha256:abc", "length"),
            ("x@md5:0123", "algorithm"),
            ("x@nodigest", "digest"),
        ] {
            let got = problem(bad);
            assert!(
                got.as_deref().is_some_and(|m| m.contains(says)),
                "{bad}: {got:?}"
            );
        }
    }
}
