/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Kernel differences handled with CO-RE, one quirk per helper. */
#ifndef FAIRWATCH_BPF_CORE_FIXES_H
#define FAIRWATCH_BPF_CORE_FIXES_H

#include <vmlinux.h>
#include <bpf/bpf_core_read.h>

/* kn->id is a u64 since 5.5 (67c0496e87d1, "kernfs: convert kernfs_node->id
 * from union kernfs_node_id to u64"); tp_btf needs 5.5 anyway. */
static __always_inline __u64 fw_cgroup_id(struct cgroup *cgrp)
{
	return BPF_CORE_READ(cgrp, kn, id);
}

/* A cgroup's parent: css.parent points at the parent's embedded self css.
 * Walking css.parent avoids kernfs_node::parent, renamed __parent in 6.15. */
static __always_inline struct cgroup *fw_cgroup_parent(struct cgroup *cgrp)
{
	struct cgroup_subsys_state *parent = BPF_CORE_READ(cgrp, self.parent);

	if (!parent)
		return NULL;
	return (struct cgroup *)((void *)parent - bpf_core_field_offset(struct cgroup, self));
}

#endif
