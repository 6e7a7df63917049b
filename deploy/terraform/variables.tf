# Inputs of the wsgate edge: an internet-facing ALB with app_cookie
# stickiness in front of a fleet of wsgate targets.
#
# The variables in the second half mirror wsgate's own flags. Their defaults
# are the binary's defaults (tests/deploy_files.rs compares them with
# `wsgate --help`); if you change a flag on the fleet, change the variable
# here too, and the preconditions in main.tf keep the two sides consistent.

# --- Where ----------------------------------------------------------------

variable "aws_region" {
  description = "AWS region of the load balancer and its log bucket."
  type        = string
}

variable "name" {
  description = "Name prefix of every resource (ALB, target group, bucket, alarms)."
  type        = string
  default     = "wsgate"

  validation {
    condition     = can(regex("^[a-z0-9-]{1,20}$", var.name))
    error_message = "The name must be 1-20 characters of lowercase letters, digits and hyphens."
  }
}

variable "vpc_id" {
  description = "VPC of the load balancer and the wsgate targets."
  type        = string
}

variable "public_subnet_ids" {
  description = "Subnets of the load balancer (at least two availability zones)."
  type        = list(string)

  validation {
    condition     = length(var.public_subnet_ids) >= 2
    error_message = "An ALB needs subnets in at least two availability zones."
  }
}

variable "internal" {
  description = "true for an internal load balancer, false for an internet-facing one."
  type        = bool
  default     = false
}

variable "ingress_cidr_blocks" {
  description = "Client networks allowed to reach the HTTPS listener."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "certificate_arn" {
  description = "ACM certificate of the HTTPS listener (the ALB terminates TLS; targets speak plain HTTP)."
  type        = string
}

variable "ssl_policy" {
  description = "TLS policy of the HTTPS listener."
  type        = string
  default     = "ELBSecurityPolicy-TLS13-1-2-2021-06"
}

variable "target_security_group_id" {
  description = "Security group of the wsgate instances or tasks; the ALB is allowed in on the traffic port."
  type        = string
}

variable "target_type" {
  description = "How targets register: \"ip\" (ECS awsvpc, EKS with the AWS Load Balancer Controller) or \"instance\"."
  type        = string
  default     = "ip"

  validation {
    condition     = contains(["ip", "instance"], var.target_type)
    error_message = "target_type must be \"ip\" or \"instance\"."
  }
}

variable "enable_deletion_protection" {
  description = "Refuse to delete the load balancer until this is turned off."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Extra tags on every resource."
  type        = map(string)
  default     = {}
}

# --- Load balancer timing ------------------------------------------------

variable "alb_idle_timeout_seconds" {
  description = "ALB idle_timeout: a connection with no bytes either way for this long is closed. Must exceed wsgate --ping-interval, so an idle WebSocket is pinged (which counts as traffic) before the ALB gives up on it."
  type        = number
  default     = 120

  validation {
    condition     = var.alb_idle_timeout_seconds >= 1 && var.alb_idle_timeout_seconds <= 4000
    error_message = "ALB idle_timeout must be between 1 and 4000 seconds."
  }
}

variable "deregistration_delay_seconds" {
  description = "Target group deregistration_delay: how long the ALB keeps open connections to a deregistered target. Must exceed wsgate --drain-timeout (plus any delay between deregistration and SIGTERM, e.g. a Kubernetes preStop sleep), so that wsgate closes every socket with 1001 itself before the ALB cuts what is left."
  type        = number
  default     = 60

  validation {
    condition     = var.deregistration_delay_seconds >= 0 && var.deregistration_delay_seconds <= 3600
    error_message = "deregistration_delay must be between 0 and 3600 seconds."
  }
}

variable "health_check_interval_seconds" {
  description = "Seconds between two health checks of a target on the health path."
  type        = number
  default     = 10
}

# --- Mirrors of wsgate flags (defaults = the binary's defaults) ----------

# wsgate --listen (env WSGATE_LISTEN)
variable "target_port" {
  description = "Traffic port of the targets: the port of wsgate --listen (default 0.0.0.0:8080)."
  type        = number
  default     = 8080
}

# wsgate --ws-path (env WSGATE_WS_PATH)
variable "ws_path" {
  description = "The gateway endpoint: wsgate --ws-path. Used by the Athena queries."
  type        = string
  default     = "/ws"
}

# wsgate --health-path (env WSGATE_HEALTH_PATH)
variable "health_path" {
  description = "Health check path: wsgate --health-path (200 while serving, 503 while draining). Never the upgrade path: a 101 is not a 200."
  type        = string
  default     = "/ws-health"
}

# wsgate --cookie-name (env WSGATE_COOKIE_NAME)
variable "cookie_name" {
  description = "Stickiness cookie: wsgate --cookie-name. wsgate sets it in its raw 101 and on GET /ws-session; the ALB keys app_cookie stickiness on it."
  type        = string
  default     = "WS_SESSION_ID"

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]+$", var.cookie_name)) && !startswith(var.cookie_name, "AWSALB")
    error_message = "The cookie name must be a token, and the AWSALB* names are reserved by the ALB."
  }
}

# wsgate --cookie-max-age (env WSGATE_COOKIE_MAX_AGE)
variable "cookie_max_age_seconds" {
  description = "wsgate --cookie-max-age (Max-Age of the cookie). Used as the stickiness cookie_duration, so the ALB pins a client exactly as long as its cookie lives."
  type        = number
  default     = 86400

  validation {
    condition     = var.cookie_max_age_seconds >= 1 && var.cookie_max_age_seconds <= 604800
    error_message = "ALB app_cookie duration must be between 1 second and 7 days."
  }
}

# wsgate --session-ttl (env WSGATE_SESSION_TTL)
variable "session_ttl_seconds" {
  description = "wsgate --session-ttl: how long a disconnected session can be resumed. The Athena reconnect query only pairs upgrades of one client that are closer than this."
  type        = number
  default     = 120
}

# wsgate --drain-timeout (env WSGATE_DRAIN_TIMEOUT)
variable "drain_timeout_seconds" {
  description = "wsgate --drain-timeout: time from SIGTERM to exit, every socket closed with 1001 inside it. Must stay below deregistration_delay_seconds."
  type        = number
  default     = 30
}

# wsgate --ping-interval (env WSGATE_PING_INTERVAL)
variable "ping_interval_seconds" {
  description = "wsgate --ping-interval: a connection silent this long gets a ping. Must stay below alb_idle_timeout_seconds."
  type        = number
  default     = 30
}

# wsgate --pong-timeout (env WSGATE_PONG_TIMEOUT)
variable "pong_timeout_seconds" {
  description = "wsgate --pong-timeout: no traffic this long after a ping closes the connection."
  type        = number
  default     = 10
}

# --- Observability -------------------------------------------------------

variable "target_response_time_p99_threshold_seconds" {
  description = "Alarm when the p99 TargetResponseTime exceeds this. For WebSockets the ALB measures the time to the 101, which wsgate answers from memory."
  type        = number
  default     = 1
}

variable "alarm_actions" {
  description = "ARNs (e.g. SNS topics) notified when an alarm fires or recovers."
  type        = list(string)
  default     = []
}

variable "access_log_retention_days" {
  description = "Days ALB access logs and Athena results are kept in the log bucket."
  type        = number
  default     = 90
}

variable "log_bucket_force_destroy" {
  description = "Allow terraform destroy to delete the log bucket with its logs."
  type        = bool
  default     = false
}

# --- Optional shared engine (redis.tf) -----------------------------------

variable "redis_enabled" {
  description = "Create an ElastiCache replication group as the fleet's shared engine (wsgate --redis; see the wsgate_redis_flags output)."
  type        = bool
  default     = false
}

variable "redis_cluster_mode" {
  description = "Cluster mode on (wsgate --redis-cluster: keys by slot, sharded pub/sub) or off (one primary and its replicas)."
  type        = bool
  default     = false
}

variable "redis_subnet_ids" {
  description = "Private subnets (in several AZs) of the replication group, reachable from the wsgate targets."
  type        = list(string)
  default     = []
}

variable "redis_node_type" {
  description = "ElastiCache node type."
  type        = string
  default     = "cache.t4g.small"
}

variable "redis_shards" {
  description = "With cluster mode on: node groups (shards), each a primary and its replicas."
  type        = number
  default     = 3
}

variable "redis_replicas_per_shard" {
  description = "Replicas of each primary (at least 1 for automatic failover)."
  type        = number
  default     = 1

  validation {
    condition     = var.redis_replicas_per_shard >= 1
    error_message = "Automatic failover needs at least one replica per shard."
  }
}

variable "redis_auth_token" {
  description = "AUTH token (16 to 128 characters) of the replication group; the gateways send it in --redis rediss://:TOKEN@host:6379."
  type        = string
  default     = ""
  sensitive   = true
}

variable "redis_snapshot_retention_days" {
  description = "Days of automatic snapshots (sessions and topic history are transient: a short retention is enough)."
  type        = number
  default     = 1
}
