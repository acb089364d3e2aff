// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Per-tenant network bytes and packets.
 *
 * tc classifiers on a tenant's host-side interfaces (veth peer, tap) count
 * per interface; cgroup_skb programs on a tenant's unified cgroup count for
 * tenants that share the host network namespace. Neither drops nor alters a
 * packet. Lengths are skb->len: with the L2 header at tc (cls_bpf pushes the
 * MAC header back at ingress), from the network header at cgroup_skb. */
#include <vmlinux.h>
#include <bpf/bpf_helpers.h>
#include "fw_net.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#ifndef TC_ACT_UNSPEC
/* Counted, then on to the next filter: the agent's own traffic shaping
 * (a redirect at a later priority, agent/net_shaper.h) must still see it. */
#define TC_ACT_UNSPEC (-1)
#endif
#ifndef TC_ACT_OK
#define TC_ACT_OK 0
#endif

/* Bumped by the agent whenever cgroup_tenants changes; invalidates the cache. */
__u32 tenant_gen = 0;
/* Packets a program saw but could not charge (no slot, map miss). */
__u64 lost_events = 0;

/* Host-side ifindex -> interface slot (index into iface_counters). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FW_NET_DEFAULT_MAX_IFACES);
	__type(key, __u32);
	__type(value, __u32);
} iface_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FW_NET_DEFAULT_MAX_IFACES);
	__type(key, __u32);
	__type(value, struct fw_net_counters);
} iface_counters SEC(".maps");

/* Unified cgroup id of a cgroup_skb tenant's directory -> tenant slot. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FW_NET_DEFAULT_MAX_TENANTS);
	__type(key, __u64);
	__type(value, __u32);
} cgroup_tenants SEC(".maps");

/* Any socket cgroup id seen -> its tenant slot (or FW_NET_NO_TENANT). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct fw_net_cgroup_slot);
} cgroup_slot_cache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FW_NET_DEFAULT_MAX_TENANTS);
	__type(key, __u32);
	__type(value, struct fw_net_counters);
} cgroup_counters SEC(".maps");

static __always_inline void charge(struct fw_net_counters *c, __u64 len, bool tenant_tx)
{
	/* Per-CPU value: no atomics needed. */
	if (tenant_tx) {
		c->tx_bytes += len;
		c->tx_packets++;
	} else {
		c->rx_bytes += len;
		c->rx_packets++;
	}
}

static __always_inline int charge_iface(struct __sk_buff *skb, bool tenant_tx)
{
	__u32 ifindex = skb->ifindex;
	struct fw_net_counters *c;
	__u32 *slot;

	/* Only interfaces the agent registered are counted. */
	slot = bpf_map_lookup_elem(&iface_slots, &ifindex);
	if (!slot)
		return TC_ACT_UNSPEC;
	c = bpf_map_lookup_elem(&iface_counters, slot);
	if (!c) {
		__sync_fetch_and_add(&lost_events, 1);
		return TC_ACT_UNSPEC;
	}
	charge(c, skb->len, tenant_tx);
	return TC_ACT_UNSPEC;
}

/* Host-side ingress: the tenant sent the packet. */
SEC("tc")
int fw_net_tc_in(struct __sk_buff *skb) { return charge_iface(skb, true); }

/* Host-side egress: the packet goes to the tenant. */
SEC("tc")
int fw_net_tc_eg(struct __sk_buff *skb) { return charge_iface(skb, false); }

static __always_inline __u32 cgroup_tenant_slot(struct __sk_buff *skb)
{
	__u32 gen = tenant_gen;
	__u64 id = bpf_skb_cgroup_id(skb);
	struct fw_net_cgroup_slot *cached;
	struct fw_net_cgroup_slot entry = {.slot = FW_NET_NO_TENANT, .gen = gen};

	__u32 *direct = bpf_map_lookup_elem(&cgroup_tenants, &id);

	/* Common case: the socket's cgroup is the tenant's own directory. */
	if (direct)
		return *direct;
	cached = bpf_map_lookup_elem(&cgroup_slot_cache, &id);
	if (cached && cached->gen == gen)
		return cached->slot;
	/* Walk from the root down: sockets in a tenant's sub-cgroups count for it. */
	for (int level = 1; level <= FW_NET_MAX_CGROUP_DEPTH; level++) {
		__u64 anc = bpf_skb_ancestor_cgroup_id(skb, level);
		__u32 *slot;

		if (!anc)
			break;
		slot = bpf_map_lookup_elem(&cgroup_tenants, &anc);
		if (slot) {
			entry.slot = *slot;
			break;
		}
		if (anc == id)
			break;
	}
	/* gen was read before the walk: a concurrent change makes this entry stale, not wrong. */
	bpf_map_update_elem(&cgroup_slot_cache, &id, &entry, BPF_ANY);
	return entry.slot;
}

static __always_inline int charge_cgroup(struct __sk_buff *skb, bool tenant_tx)
{
	__u32 slot = cgroup_tenant_slot(skb);
	struct fw_net_counters *c;

	/* Attached only to tenant cgroups: a miss means the tenant is being removed. */
	if (slot == FW_NET_NO_TENANT) {
		__sync_fetch_and_add(&lost_events, 1);
		return 1;
	}
	c = bpf_map_lookup_elem(&cgroup_counters, &slot);
	if (!c) {
		__sync_fetch_and_add(&lost_events, 1);
		return 1;
	}
	charge(c, skb->len, tenant_tx);
	return 1;
}

SEC("cgroup_skb/ingress")
int fw_net_cg_in(struct __sk_buff *skb) { return charge_cgroup(skb, false); }

SEC("cgroup_skb/egress")
int fw_net_cg_eg(struct __sk_buff *skb) { return charge_cgroup(skb, true); }
