output "alb_dns_name" {
  description = "Point your wss:// hostname (CNAME or alias) here."
  value       = aws_lb.ws.dns_name
}

output "alb_zone_id" {
  description = "Hosted zone of the ALB, for a Route 53 alias record."
  value       = aws_lb.ws.zone_id
}

output "alb_arn" {
  description = "ARN of the load balancer."
  value       = aws_lb.ws.arn
}

output "alb_security_group_id" {
  description = "Security group of the ALB."
  value       = aws_security_group.alb.id
}

output "target_group_arn" {
  description = "Register wsgate targets here (ECS service load_balancer block, aws_autoscaling_attachment, or a TargetGroupBinding on EKS)."
  value       = aws_lb_target_group.ws.arn
}

output "access_logs_bucket" {
  description = "Bucket of the ALB access logs and the Athena results."
  value       = aws_s3_bucket.logs.id
}

output "athena_workgroup" {
  description = "Athena workgroup to run the saved queries in."
  value       = aws_athena_workgroup.logs.name
}

output "athena_table" {
  description = "Athena table over the ALB access logs (database.table)."
  value       = "${aws_glue_catalog_database.logs.name}.${aws_glue_catalog_table.alb_access_logs.name}"
}

output "athena_named_query_ids" {
  description = "Saved queries: reconnects landing on the same target."
  value = {
    reconnects_same_target       = aws_athena_named_query.reconnects_same_target.id
    reconnect_stickiness_by_hour = aws_athena_named_query.reconnect_stickiness_by_hour.id
  }
}

output "alarm_arns" {
  description = "The CloudWatch alarms."
  value = {
    target_5xx           = aws_cloudwatch_metric_alarm.target_5xx.arn
    target_response_time = aws_cloudwatch_metric_alarm.target_response_time.arn
    elb_5xx              = aws_cloudwatch_metric_alarm.elb_5xx.arn
  }
}

output "wsgate_redis_flags" {
  description = "The gateways' Redis flags for the optional replication group (redis.tf); replace TOKEN with redis_auth_token (keep it in a secret store). Empty without redis_enabled."
  value = var.redis_enabled ? (
    var.redis_cluster_mode
    ? "--redis-cluster --redis rediss://:TOKEN@${aws_elasticache_replication_group.redis[0].configuration_endpoint_address}:6379"
    : "--redis rediss://:TOKEN@${aws_elasticache_replication_group.redis[0].primary_endpoint_address}:6379"
  ) : ""
}
