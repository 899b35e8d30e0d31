//! `redis+<kind>://` URLs (`redis+cluster://`, `redis+sentinel://`, and
//! their `rediss+` TLS forms) taken apart, for the stores that turn them
//! into `redis://` URLs of the nodes they reach. Written here because the
//! redis crate parses one `redis://` node per URL, not lists of hosts.

/// The parts of `<scheme>+<kind>://[credentials@]host[,host…][/path][?query]`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Parts<'a> {
    /// `redis` or `rediss`.
    pub scheme: &'static str,
    /// `user:password@`, or empty.
    pub credentials: String,
    /// At least one, none empty.
    pub hosts: Vec<&'a str>,
    /// After the first `/`, or empty.
    pub path: &'a str,
    /// `?query`, or empty.
    pub query: String,
}

/// Splits `url` of `kind`; `Err` says what is wrong with it.
pub(super) fn split<'a>(url: &'a str, kind: &str) -> Result<Parts<'a>, &'static str> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix(&format!("redis+{kind}://")) {
        ("redis", rest)
    } else if let Some(rest) = url.strip_prefix(&format!("rediss+{kind}://")) {
        ("rediss", rest)
    } else {
        return Err("unknown scheme");
    };
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, format!("?{query}")),
        None => (rest, String::new()),
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (credentials, hosts) = match authority.rsplit_once('@') {
        Some((credentials, hosts)) => (format!("{credentials}@"), hosts),
        None => (String::new(), authority),
    };
    let hosts: Vec<&str> = hosts.split(',').collect();
    if hosts.iter().any(|host| host.is_empty()) {
        return Err("an empty host");
    }
    Ok(Parts {
        scheme,
        credentials,
        hosts,
        path,
        query,
    })
}
