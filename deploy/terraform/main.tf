# The wsgate edge: an Application Load Balancer that terminates TLS and
# forwards WebSocket upgrades over plain HTTP to a target group with
# app_cookie stickiness on wsgate's own session cookie.
#
#   client --wss--> ALB :443 --HTTP/1.1--> wsgate :8080 (/ws, /ws-health)
#
# How the pieces fit wsgate's behaviour:
# * stickiness: wsgate writes `Set-Cookie: WS_SESSION_ID=<uuid>` into its raw
#   101 (and answers GET /ws-session with it, for a client that wants its very
#   first upgrade pinned too: AWS does not document that the ALB reads a
#   cookie set on a 101). Reconnects carrying the cookie go back to the
#   target that holds the session, which resumes it.
# * idle timeout above wsgate's --ping-interval: a quiet socket is pinged
#   before the ALB's idle timer runs out.
# * deregistration delay above wsgate's --drain-timeout: on a rolling deploy
#   the target stops getting new connections, wsgate closes every socket
#   itself with 1001 "draining" inside its drain window, and only then would
#   the ALB cut anything.
# * health check on --health-path, plain HTTP, 200 only: wsgate answers 503
#   there from the moment it gets SIGTERM.
#
# Check the order of deregistration and SIGTERM on your platform: with the
# AWS Load Balancer Controller on Kubernetes they start together (hence the
# preStop sleep in deploy/k8s, counted in the grace period); on ECS a task is
# only sent SIGTERM once its deregistration has finished, so there the delay
# alone bounds how long open sockets survive a deploy.

locals {
  # ALB and target group names are limited to 32 characters.
  lb_name = substr("${var.name}-alb", 0, 32)
  tg_name = substr("${var.name}-tg", 0, 32)
}

# --- Security groups -----------------------------------------------------

resource "aws_security_group" "alb" {
  name        = "${var.name}-alb"
  description = "wsgate ALB: HTTPS from clients, HTTP to the wsgate targets"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "alb_https" {
  for_each = toset(var.ingress_cidr_blocks)

  security_group_id = aws_security_group.alb.id
  description       = "HTTPS (wss://) from clients"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "alb_to_targets" {
  security_group_id            = aws_security_group.alb.id
  description                  = "Traffic and health checks to wsgate (--listen port)"
  ip_protocol                  = "tcp"
  from_port                    = var.target_port
  to_port                      = var.target_port
  referenced_security_group_id = var.target_security_group_id
}

resource "aws_vpc_security_group_ingress_rule" "targets_from_alb" {
  security_group_id            = var.target_security_group_id
  description                  = "wsgate traffic port from the ALB only (the admin port stays private)"
  ip_protocol                  = "tcp"
  from_port                    = var.target_port
  to_port                      = var.target_port
  referenced_security_group_id = aws_security_group.alb.id
}

# --- Load balancer -------------------------------------------------------

resource "aws_lb" "ws" {
  #checkov:skip=CKV2_AWS_28:WAF is deployment-specific; attach your web ACL with aws_wafv2_web_acl_association.
  name               = local.lb_name
  load_balancer_type = "application"
  internal           = var.internal
  subnets            = var.public_subnet_ids
  security_groups    = [aws_security_group.alb.id]

  # Must exceed wsgate --ping-interval: see the precondition below.
  idle_timeout = var.alb_idle_timeout_seconds

  drop_invalid_header_fields = true
  enable_deletion_protection = var.enable_deletion_protection

  access_logs {
    bucket  = aws_s3_bucket.logs.id
    prefix  = local.alb_log_prefix
    enabled = true
  }

  # The ALB checks that it may write to the bucket when logging is enabled.
  depends_on = [aws_s3_bucket_policy.logs]

  lifecycle {
    precondition {
      condition     = var.alb_idle_timeout_seconds > var.ping_interval_seconds
      error_message = "alb_idle_timeout_seconds must be greater than ping_interval_seconds (wsgate --ping-interval), or the ALB closes idle WebSockets before wsgate pings them."
    }
  }
}

resource "aws_lb_target_group" "ws" {
  name        = local.tg_name
  vpc_id      = var.vpc_id
  target_type = var.target_type

  # The ALB terminates TLS; wsgate speaks HTTP/1.1 on --listen. WebSocket
  # upgrades need the HTTP1 protocol version.
  port             = var.target_port
  protocol         = "HTTP"
  protocol_version = "HTTP1"

  load_balancing_algorithm_type = "round_robin"

  # Longer than wsgate --drain-timeout: wsgate closes its sockets itself.
  deregistration_delay = var.deregistration_delay_seconds

  stickiness {
    enabled         = true
    type            = "app_cookie"
    cookie_name     = var.cookie_name
    cookie_duration = var.cookie_max_age_seconds
  }

  health_check {
    enabled             = true
    protocol            = "HTTP"
    port                = "traffic-port"
    path                = var.health_path
    matcher             = "200"
    interval            = var.health_check_interval_seconds
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }

  lifecycle {
    precondition {
      condition     = var.deregistration_delay_seconds > var.drain_timeout_seconds
      error_message = "deregistration_delay_seconds must be greater than drain_timeout_seconds (wsgate --drain-timeout), or the ALB cuts sockets wsgate is still draining."
    }

    precondition {
      condition     = var.pong_timeout_seconds < var.ping_interval_seconds
      error_message = "pong_timeout_seconds must be shorter than ping_interval_seconds: wsgate refuses to start otherwise."
    }

    precondition {
      condition     = var.health_path != var.ws_path
      error_message = "The health check must not target the upgrade path: a 101 is not a 200."
    }
  }
}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.ws.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = var.ssl_policy
  certificate_arn   = var.certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.ws.arn
  }
}
