# Optional: the shared engine of a wsgate fleet (--redis), an ElastiCache
# replication group (Redis OSS 7, encryption in transit and at rest, an AUTH
# token, automatic failover across AZs), cluster mode on or off. Off by
# default (redis_enabled = false): one node, or a Redis of your own.
#
# Wire it to the gateways with the output `wsgate_redis_flags`: with
# cluster mode on, `--redis-cluster --redis rediss://:TOKEN@<configuration
# endpoint>:6379`; off, `--redis rediss://:TOKEN@<primary endpoint>:6379`.
# Put the token in the gateways' secret store (WSGATE_REDIS carries the whole
# URL) rather than in the task definition in clear.

locals {
  redis_count = var.redis_enabled ? 1 : 0
}

resource "aws_security_group" "redis" {
  count       = local.redis_count
  name        = "${var.name}-redis"
  description = "wsgate shared engine: Redis (TLS) from the wsgate targets only"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "redis_from_targets" {
  count = local.redis_count

  security_group_id            = aws_security_group.redis[0].id
  description                  = "rediss:// from wsgate (--redis)"
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
  referenced_security_group_id = var.target_security_group_id
}

resource "aws_elasticache_subnet_group" "redis" {
  count      = local.redis_count
  name       = "${var.name}-redis"
  subnet_ids = var.redis_subnet_ids
}

resource "aws_elasticache_replication_group" "redis" {
  #checkov:skip=CKV_AWS_191:At-rest encryption is on with the service key; a customer managed KMS key is a per-account choice (set kms_key_id).
  count = local.redis_count

  replication_group_id = "${var.name}-redis"
  description          = "wsgate shared engine (sessions, topic history, cross-node fan-out)"
  engine               = "redis"
  engine_version       = "7.1"
  node_type            = var.redis_node_type
  port                 = 6379
  parameter_group_name = var.redis_cluster_mode ? "default.redis7.cluster.on" : "default.redis7"

  # Cluster mode on: shards of one primary and its replicas (sharded pub/sub
  # keeps a topic's messages inside its shard). Off: one primary, replicas.
  num_node_groups         = var.redis_cluster_mode ? var.redis_shards : 1
  replicas_per_node_group = var.redis_replicas_per_shard

  automatic_failover_enabled = true
  multi_az_enabled           = true
  subnet_group_name          = aws_elasticache_subnet_group.redis[0].name
  security_group_ids         = [aws_security_group.redis[0].id]

  transit_encryption_enabled = true
  at_rest_encryption_enabled = true
  auth_token                 = var.redis_auth_token

  snapshot_retention_limit = var.redis_snapshot_retention_days
  apply_immediately        = false

  lifecycle {
    precondition {
      condition     = length(var.redis_auth_token) >= 16
      error_message = "redis_auth_token must be set (16 to 128 characters) when redis_enabled is true."
    }
  }
}
