//! Where the Redis sink writes: one Redis (`REDIS_URL`) or a Redis Cluster
//! (`REDIS_CLUSTER_NODES`). Checked by `config`, used by `store::redis`.

/// One Redis, or the nodes of a cluster to discover it from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// `REDIS_URL`.
    Standalone(String),
    /// `REDIS_CLUSTER_NODES`: the cluster is discovered from any of them.
    Cluster(Vec<String>),
}

impl RedisTarget {
    /// `standalone` or `cluster`, as `/health` says it.
    pub fn mode(&self) -> &'static str {
        match self {
            Self::Standalone(_) => "standalone",
            Self::Cluster(_) => "cluster",
        }
    }

    /// The URLs given (with their passwords).
    pub fn urls(&self) -> &[String] {
        match self {
            Self::Standalone(url) => std::slice::from_ref(url),
            Self::Cluster(nodes) => nodes,
        }
    }
}
