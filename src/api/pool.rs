/*!
Who may hold one of the `HTTP_POOL_SIZE` connections.

A new connection is always let in while some connection is merely waiting: when its peer (source
IP) already holds `HTTP_MAX_CONNECTIONS_PER_PEER`, or when the pool is full, the connection that
has waited longest without a request in progress — silent since it opened, trickling a head, or
idle after its last response — is shed to make room. So held-open sockets, whether idle or a
slowloris, cannot lock a new client out, even one on the same address as the attacker (all of
loopback is one peer), and a request being handled is never cut. Only when every connection of
the peer is handling a request is a new one refused; only when every connection of the pool is,
does the accept loop wait for one to finish.
*/

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::conn::ConnState;

pub(super) struct Pool {
    epoch: Instant,
    max_per_peer: usize,
    permits: Arc<Semaphore>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    /// Open connections that were not shed.
    conns: HashMap<u64, (IpAddr, Arc<ConnState>)>,
    /// How many of `conns` each peer has.
    peers: HashMap<IpAddr, usize>,
    /// Shed connections whose slot is not released yet: slots already on their way. Changed
    /// only under the lock, together with the release of the slot, so that `admit` never
    /// counts a slot both as free and as coming.
    releasing: usize,
}

impl Inner {
    /// The connection (of `peer`, or of any) that has waited longest without a request in
    /// progress.
    fn oldest_idle(&self, peer: Option<IpAddr>) -> Option<u64> {
        self.conns
            .iter()
            .filter(|(_, (ip, _))| peer.is_none_or(|p| p == *ip))
            .filter_map(|(id, (_, state))| state.idle_since().map(|since| (since, *id)))
            .min()
            .map(|(_, id)| id)
    }

    /// Forgets connection `id` and asks it to close.
    fn shed(&mut self, id: u64) {
        if let Some((ip, state)) = self.conns.remove(&id) {
            self.forget_peer(ip);
            self.releasing += 1;
            state.shed();
        }
    }

    fn forget_peer(&mut self, ip: IpAddr) {
        if let Some(n) = self.peers.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.peers.remove(&ip);
            }
        }
    }
}

/// A connection admitted but not yet holding a slot.
pub(super) struct Ticket {
    peer: IpAddr,
}

/// A connection's slot: released (and the connection forgotten) when dropped.
pub(super) struct Lease {
    pool: Arc<Pool>,
    id: u64,
    peer: IpAddr,
    pub(super) state: Arc<ConnState>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Pool {
    pub(super) fn new(size: usize, max_per_peer: usize) -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            max_per_peer: max_per_peer.max(1),
            permits: Arc::new(Semaphore::new(size)),
            inner: Mutex::new(Inner::default()),
        })
    }

    /// Decides whether a connection from `peer` comes in, shedding the oldest idle connection
    /// of that peer (at its cap) or of the pool (when full) to make room. `None`: refused, every
    /// connection of that peer is handling a request.
    pub(super) fn admit(&self, peer: IpAddr) -> Option<Ticket> {
        let peer = peer.to_canonical();
        let mut inner = self.inner.lock();
        let held = inner.peers.get(&peer).copied().unwrap_or(0);
        if held >= self.max_per_peer {
            let victim = inner.oldest_idle(Some(peer))?;
            inner.shed(victim);
        } else if self.permits.available_permits() == 0
            && inner.releasing == 0
            && let Some(victim) = inner.oldest_idle(None)
        {
            inner.shed(victim);
        }
        Some(Ticket { peer })
    }

    /// Waits for a slot (at once unless every connection is busy or just being shed).
    pub(super) async fn acquire(self: &Arc<Self>, ticket: Ticket) -> Option<Lease> {
        let permit = Arc::clone(&self.permits).acquire_owned().await.ok()?;
        let state = Arc::new(ConnState::new(self.epoch));
        let mut inner = self.inner.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        inner.conns.insert(id, (ticket.peer, Arc::clone(&state)));
        *inner.peers.entry(ticket.peer).or_default() += 1;
        Some(Lease {
            pool: Arc::clone(self),
            id,
            peer: ticket.peer,
            state,
            permit: Some(permit),
        })
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut inner = self.pool.inner.lock();
        if inner.conns.remove(&self.id).is_some() {
            inner.forget_peer(self.peer);
        } else {
            inner.releasing -= 1;
        }
        // Under the lock: `admit` sees the slot either coming or free, never both.
        drop(self.permit.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

    async fn open(pool: &Arc<Pool>, peer: IpAddr) -> Lease {
        let ticket = pool.admit(peer).expect("admitted");
        let lease = tokio::time::timeout(Duration::from_secs(1), pool.acquire(ticket))
            .await
            .expect("a slot")
            .expect("open pool");
        tokio::time::advance(Duration::from_millis(1)).await;
        lease
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_at_its_cap_replaces_its_oldest_idle_connection() {
        let pool = Pool::new(100, 3);
        let first = open(&pool, A).await;
        let second = open(&pool, A).await;
        let third = open(&pool, A).await;
        first.state.begin_request(); // busy: never shed
        let other = open(&pool, B).await;
        let fourth = open(&pool, A).await;
        assert_eq!(
            second.state.idle_since(),
            None,
            "the oldest idle one was shed"
        );
        assert!(first.state.idle_since().is_none() && third.state.idle_since().is_some());
        assert!(
            other.state.idle_since().is_some(),
            "another peer is not touched"
        );
        assert_eq!(pool.inner.lock().releasing, 1);
        drop(second);
        assert_eq!(pool.inner.lock().releasing, 0);
        third.state.begin_request();
        fourth.state.begin_request();
        assert!(
            pool.admit(A).is_none(),
            "every connection of A is busy: refused"
        );
        assert!(pool.admit(B).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_pool_sheds_its_oldest_idle_connection() {
        let pool = Pool::new(2, 10);
        let busy = open(&pool, A).await;
        busy.state.begin_request();
        let idle = open(&pool, B).await;
        let ticket = pool.admit(A).expect("admitted");
        assert_eq!(idle.state.idle_since(), None, "shed");
        let waiting = tokio::spawn({
            let pool = Arc::clone(&pool);
            async move { pool.acquire(ticket).await.is_some() }
        });
        tokio::time::advance(Duration::from_millis(10)).await;
        assert!(
            !waiting.is_finished(),
            "the slot comes when the shed one closes"
        );
        drop(idle);
        assert!(waiting.await.expect("join"));
        drop(busy);
        assert_eq!(pool.inner.lock().releasing, 0);
        assert_eq!(pool.inner.lock().peers.get(&B), None);
    }
}
