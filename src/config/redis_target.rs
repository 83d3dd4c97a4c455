/*!
`REDIS_URL` or `REDIS_CLUSTER_NODES`: the one Redis or the Redis Cluster the sink writes to.
Exclusive: both set is an error naming both. A refusal quotes the value without its passwords.
*/

use crate::env::{Env, EnvError, redact_url};
use crate::model::RedisTarget;

/// The Redis target, or `None` when neither variable is set.
///
/// # Errors
/// Both variables set, or a URL the redis client cannot use (naming the variable and value).
pub(super) fn read(env: &Env<'_>) -> Result<Option<RedisTarget>, EnvError> {
    let url = env.get("REDIS_URL");
    let nodes = env.get("REDIS_CLUSTER_NODES");
    if let (Some(url), Some(nodes)) = (&url, &nodes) {
        return Err(EnvError::new(
            "REDIS_CLUSTER_NODES",
            redact_list(nodes),
            format!(
                "REDIS_URL is set too (`{}`): set REDIS_URL for one Redis or REDIS_CLUSTER_NODES for a cluster, not both",
                redact_url(url)
            ),
        ));
    }
    if let Some(url) = url {
        if !usable(&url, &["redis", "rediss", "unix", "redis+unix"]) {
            return Err(EnvError::new(
                "REDIS_URL",
                // Never echo a password back into logs.
                redact_url(&url),
                "expected redis://[user:password@]host:port[/db], rediss://… or unix:///path",
            ));
        }
        return Ok(Some(RedisTarget::Standalone(url)));
    }
    let Some(list) = nodes else {
        return Ok(None);
    };
    let mut found = Vec::new();
    for node in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        // A cluster node is a TCP address: no unix socket, no database number but 0.
        if !usable(node, &["redis", "rediss"])
            || node.split_once("://").is_some_and(|(_, rest)| {
                rest.split_once('/')
                    .is_some_and(|(_, db)| !db.is_empty() && db != "0")
            })
        {
            return Err(EnvError::new(
                "REDIS_CLUSTER_NODES",
                redact_list(&list),
                format!(
                    "`{}` is not a cluster node: expected redis://[user:password@]host:port or rediss://…, comma-separated",
                    redact_url(node)
                ),
            ));
        }
        found.push(node.to_string());
    }
    if found.is_empty() {
        return Err(EnvError::new(
            "REDIS_CLUSTER_NODES",
            list,
            "expected at least one redis://host:port, comma-separated",
        ));
    }
    Ok(Some(RedisTarget::Cluster(found)))
}

/// Whether the redis client can use `url` and its scheme is one of `schemes`.
fn usable(url: &str, schemes: &[&str]) -> bool {
    url.split_once("://")
        .is_some_and(|(scheme, _)| schemes.contains(&scheme))
        && redis::Client::open(url).is_ok()
}

/// A comma-separated list of URLs with every password hidden.
fn redact_list(list: &str) -> String {
    list.split(',')
        .map(redact_url)
        .collect::<Vec<_>>()
        .join(",")
}
