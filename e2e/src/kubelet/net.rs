//! The box's address scheme: one loopback /24 per kubelet stands in for the node's pod network.
//!
//! On Linux all of 127.0.0.0/8 reaches the loopback interface, so every pod can have an address
//! of its own and every node process can listen on the same ports, as containers in their own
//! network namespaces do. A kubelet given the net `(A, B)` uses `127.A.B.0/24`:
//!
//! | address | what |
//! | --- | --- |
//! | `127.A.B.i`, `i` in 1..=126 | pod IP of the pod in slot `i`: the per-pod proxy listens here |
//! | `127.A.B.128` | the node's IP (`hostIP`); the kubelet holds port 10250 on it to reserve the net |
//! | `127.A.B.(128+i)` | the pod's *inner* address: the node process listens here |
//!
//! Everyone reaches a pod at its pod IP, through the proxy, so cutting the proxy cuts the pod off
//! from everyone; only the kubelet's probes go to the inner address, as a real kubelet's probes
//! do not cross the pod network's faults.

use crate::{Error, Result};
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener};

/// The most pods one kubelet runs: the pod slots of its /24.
pub const MAX_PODS: usize = 126;
/// The port the kubelet holds on its node IP while it runs, so two kubelets (in this process or
/// another) never share a net. It is the real kubelet's API port.
pub const KUBELET_PORT: u16 = 10250;

/// A pod's two addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodAddresses {
    /// The pod IP, where the proxy listens and everyone connects.
    pub ip: Ipv4Addr,
    /// The inner address the container's process listens on.
    pub inner: Ipv4Addr,
}

/// The addresses of pod slot `slot` (1..=126) in net `(a, b)`.
pub fn pod_addresses(net: (u8, u8), slot: u8) -> PodAddresses {
    PodAddresses {
        ip: Ipv4Addr::new(127, net.0, net.1, slot),
        inner: Ipv4Addr::new(127, net.0, net.1, slot.saturating_add(128)),
    }
}

/// The node's IP in net `(a, b)`.
pub fn host_ip(net: (u8, u8)) -> Ipv4Addr {
    Ipv4Addr::new(127, net.0, net.1, 128)
}

/// Pod slots in use; hands out the lowest free one.
#[derive(Debug)]
pub struct SlotPool {
    used: BTreeSet<u8>,
    max: u8,
}

impl SlotPool {
    /// A pool of slots `1..=max` (capped at [`MAX_PODS`]).
    pub fn new(max: usize) -> Self {
        let max = u8::try_from(max.min(MAX_PODS)).unwrap_or(0);
        Self {
            used: BTreeSet::new(),
            max,
        }
    }

    /// The lowest free slot, now taken; `None` when every slot is.
    pub fn allocate(&mut self) -> Option<u8> {
        let slot = (1..=self.max).find(|s| !self.used.contains(s))?;
        self.used.insert(slot);
        Some(slot)
    }

    /// Frees `slot`.
    pub fn release(&mut self, slot: u8) {
        self.used.remove(&slot);
    }

    /// How many slots are taken.
    pub fn in_use(&self) -> usize {
        self.used.len()
    }
}

/// Takes the net `(a, b)` for this kubelet: binds the node IP's kubelet port, held until the
/// returned listener is dropped. Fails if another kubelet (of any process) holds the net.
pub fn reserve(net: (u8, u8)) -> Result<TcpListener> {
    if net.0 == 0 {
        return Err(Error::Invalid(format!(
            "net 127.{}.{}.0/24: 127.0.x.x is left to the host's own services",
            net.0, net.1
        )));
    }
    TcpListener::bind((host_ip(net), KUBELET_PORT)).map_err(|source| Error::Io {
        what: format!(
            "reserving the box net 127.{}.{}.0/24 (is another kubelet using it?)",
            net.0, net.1
        ),
        source,
    })
}

/// A net `(a, b)` no kubelet holds right now, searching `b` from a start derived from this
/// process's id so concurrent test processes pick different nets. Racy by nature; the
/// kubelet's own [`reserve`] fails loudly if another process took it meanwhile.
pub fn free_net(a: u8) -> Result<(u8, u8)> {
    let start = std::process::id() % 254;
    (0..254u32)
        .map(|i| (a, u8::try_from(1 + (start + i) % 254).unwrap_or(1)))
        .find(|&net| reserve(net).is_ok())
        .ok_or_else(|| Error::Invalid(format!("no free box net in 127.{a}.x.0/16")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_pair_pod_ip_and_inner() {
        let a = pod_addresses((7, 9), 3);
        assert_eq!(a.ip, Ipv4Addr::new(127, 7, 9, 3));
        assert_eq!(a.inner, Ipv4Addr::new(127, 7, 9, 131));
        assert_eq!(host_ip((7, 9)), Ipv4Addr::new(127, 7, 9, 128));
        let last = pod_addresses((7, 9), MAX_PODS as u8);
        assert_eq!(last.inner, Ipv4Addr::new(127, 7, 9, 254));
    }

    #[test]
    fn slots_are_lowest_free_and_bounded() {
        let mut pool = SlotPool::new(3);
        assert_eq!(pool.allocate(), Some(1));
        assert_eq!(pool.allocate(), Some(2));
        assert_eq!(pool.allocate(), Some(3));
        assert_eq!(pool.allocate(), None);
        pool.release(2);
        assert_eq!(pool.allocate(), Some(2));
        assert_eq!(pool.in_use(), 3);
        assert_eq!(SlotPool::new(10_000).max as usize, MAX_PODS);
    }
}
