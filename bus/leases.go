package bus

// LeasesCurrent reports whether this node's replica of the leases bucket
// has a Raft leader it heard from lately (it leads, or the leader's last
// heartbeat is under two seconds old): while it has none, no lease can be
// renewed anywhere, so placement does not count that time as an owner's
// silence. True without a cluster.
func (b *Bus) LeasesCurrent() bool {
	if b.ns == nil || !b.Cluster.Clustered() {
		return true
	}
	return b.ns.JetStreamIsStreamCurrent(b.ns.GlobalAccount().Name, "KV_"+BucketLeases)
}
