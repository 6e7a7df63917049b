# ALB access logs in S3, an Athena table over them, and saved queries that
# show whether consecutive reconnects of one client land on the same target.

data "aws_caller_identity" "current" {}

# The account that writes ALB access logs in regions opened before August
# 2022; newer regions use the log delivery service principal. The bucket
# policy allows both.
data "aws_elb_service_account" "current" {}

locals {
  alb_log_prefix = "alb"
  # Where the ALB writes: <prefix>/AWSLogs/<account>/elasticloadbalancing/<region>/yyyy/mm/dd/
  alb_log_location = "s3://${aws_s3_bucket.logs.id}/${local.alb_log_prefix}/AWSLogs/${data.aws_caller_identity.current.account_id}/elasticloadbalancing/${var.aws_region}/"
  athena_table     = "\"${aws_glue_catalog_database.logs.name}\".\"${aws_glue_catalog_table.alb_access_logs.name}\""

  # One group per column below, in order (the ALB access log entry format).
  # Fields the ALB may append later are matched and ignored by the last,
  # non-capturing group.
  alb_log_regex = "([^ ]*) ([^ ]*) ([^ ]*) ([^ ]*):([0-9]*) ([^ ]*)[:-]([0-9]*) ([-.0-9]*) ([-.0-9]*) ([-.0-9]*) (|[-0-9]*) (-|[-0-9]*) ([-0-9]*) ([-0-9]*) \"([^ ]*) (.*) (- |[^ ]*)\" \"([^\"]*)\" ([A-Z0-9-_]+) ([A-Za-z0-9.-]*) ([^ ]*) \"([^\"]*)\" \"([^\"]*)\" \"([^\"]*)\" ([-.0-9]*) ([^ ]*) \"([^\"]*)\" \"([^\"]*)\" \"([^ ]*)\" \"([^\\s]+?)\" \"([^\\s]+)\" \"([^ ]*)\" \"([^ ]*)\" ?([^ ]*)?(?: .*)?"

  alb_log_columns = [
    ["type", "string"],
    ["time", "string"],
    ["elb", "string"],
    ["client_ip", "string"],
    ["client_port", "int"],
    ["target_ip", "string"],
    ["target_port", "int"],
    ["request_processing_time", "double"],
    ["target_processing_time", "double"],
    ["response_processing_time", "double"],
    ["elb_status_code", "int"],
    ["target_status_code", "string"],
    ["received_bytes", "bigint"],
    ["sent_bytes", "bigint"],
    ["request_verb", "string"],
    ["request_url", "string"],
    ["request_proto", "string"],
    ["user_agent", "string"],
    ["ssl_cipher", "string"],
    ["ssl_protocol", "string"],
    ["target_group_arn", "string"],
    ["trace_id", "string"],
    ["domain_name", "string"],
    ["chosen_cert_arn", "string"],
    ["matched_rule_priority", "string"],
    ["request_creation_time", "string"],
    ["actions_executed", "string"],
    ["redirect_url", "string"],
    ["lambda_error_reason", "string"],
    ["target_port_list", "string"],
    ["target_status_code_list", "string"],
    ["classification", "string"],
    ["classification_reason", "string"],
    ["conn_trace_id", "string"],
  ]

  # The WebSocket upgrades answered 101 over the last day, each with the
  # target it landed on. For a WebSocket, `time` is when the connection
  # closed; `request_creation_time` is when the upgrade arrived.
  # ALB access logs carry no cookies, so one client is approximated by its
  # IP address and User-Agent. wsgate counts routing drift exactly, per node:
  # wsgate_sticky_misses_total (cookie present, session unknown here).
  reconnects_sql = <<-SQL
    WITH upgrades AS (
      SELECT
        client_ip,
        user_agent,
        target_ip,
        from_iso8601_timestamp(request_creation_time) AS started
      FROM ${local.athena_table}
      WHERE day >= date_format(current_date - INTERVAL '1' DAY, '%Y/%m/%d')
        AND type IN ('ws', 'wss')
        AND elb_status_code = 101
        AND url_extract_path(request_url) = '${var.ws_path}'
    ),
    ordered AS (
      SELECT
        client_ip,
        user_agent,
        started,
        target_ip,
        lag(started) OVER (PARTITION BY client_ip, user_agent ORDER BY started) AS previous_started,
        lag(target_ip) OVER (PARTITION BY client_ip, user_agent ORDER BY started) AS previous_target_ip
      FROM upgrades
    ),
    reconnects AS (
      -- A reconnect: the next upgrade of the same client within the session
      -- TTL (wsgate --session-ttl), the window in which it can resume.
      SELECT *
      FROM ordered
      WHERE previous_started IS NOT NULL
        AND date_diff('second', previous_started, started) <= ${var.session_ttl_seconds}
    )
  SQL
}

# --- Bucket --------------------------------------------------------------

resource "aws_s3_bucket" "logs" {
  #checkov:skip=CKV_AWS_18:This is the log bucket; logging its own access would log into itself.
  #checkov:skip=CKV_AWS_144:Access logs are disposable diagnostics; cross-region replication is not worth its cost here.
  #checkov:skip=CKV2_AWS_62:Nothing consumes events for new log objects; Athena reads them on demand.
  #checkov:skip=CKV_AWS_145:ALB access log delivery supports only SSE-S3 (AES256), not SSE-KMS.
  bucket        = "${var.name}-alb-logs-${data.aws_caller_identity.current.account_id}-${var.aws_region}"
  force_destroy = var.log_bucket_force_destroy
}

resource "aws_s3_bucket_ownership_controls" "logs" {
  bucket = aws_s3_bucket.logs.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "logs" {
  bucket                  = aws_s3_bucket.logs.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "logs" {
  bucket = aws_s3_bucket.logs.id

  rule {
    apply_server_side_encryption_by_default {
      # The only encryption ALB access log delivery supports.
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_versioning" "logs" {
  bucket = aws_s3_bucket.logs.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "logs" {
  bucket = aws_s3_bucket.logs.id

  rule {
    id     = "expire"
    status = "Enabled"

    filter {}

    expiration {
      days = var.access_log_retention_days
    }

    noncurrent_version_expiration {
      noncurrent_days = 1
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  depends_on = [aws_s3_bucket_versioning.logs]
}

data "aws_iam_policy_document" "logs" {
  statement {
    sid       = "AlbLogDeliveryOlderRegions"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.logs.arn}/${local.alb_log_prefix}/AWSLogs/${data.aws_caller_identity.current.account_id}/*"]

    principals {
      type        = "AWS"
      identifiers = [data.aws_elb_service_account.current.arn]
    }
  }

  statement {
    sid       = "AlbLogDelivery"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.logs.arn}/${local.alb_log_prefix}/AWSLogs/${data.aws_caller_identity.current.account_id}/*"]

    principals {
      type        = "Service"
      identifiers = ["logdelivery.elasticloadbalancing.amazonaws.com"]
    }
  }

  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.logs.arn, "${aws_s3_bucket.logs.arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "logs" {
  bucket = aws_s3_bucket.logs.id
  policy = data.aws_iam_policy_document.logs.json

  depends_on = [aws_s3_bucket_public_access_block.logs]
}

# --- Athena --------------------------------------------------------------

resource "aws_glue_catalog_database" "logs" {
  name        = replace("${var.name}_edge_logs", "-", "_")
  description = "Access logs of the ${var.name} ALB"
}

resource "aws_glue_catalog_table" "alb_access_logs" {
  name          = "alb_access_logs"
  database_name = aws_glue_catalog_database.logs.name
  table_type    = "EXTERNAL_TABLE"
  description   = "ALB access logs (one line per request; one per WebSocket connection, written when it closes)"

  # Partition projection: no crawler, no ALTER TABLE ADD PARTITION. Always
  # filter on `day` (yyyy/MM/dd) to bound what a query scans.
  parameters = {
    "EXTERNAL"                     = "TRUE"
    "projection.enabled"           = "true"
    "projection.day.type"          = "date"
    "projection.day.range"         = "2024/01/01,NOW"
    "projection.day.format"        = "yyyy/MM/dd"
    "projection.day.interval"      = "1"
    "projection.day.interval.unit" = "DAYS"
    "storage.location.template"    = "${local.alb_log_location}$${day}"
  }

  partition_keys {
    name = "day"
    type = "string"
  }

  storage_descriptor {
    location      = local.alb_log_location
    input_format  = "org.apache.hadoop.mapred.TextInputFormat"
    output_format = "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat"

    ser_de_info {
      serialization_library = "org.apache.hadoop.hive.serde2.RegexSerDe"

      parameters = {
        "serialization.format" = "1"
        "input.regex"          = local.alb_log_regex
      }
    }

    dynamic "columns" {
      for_each = local.alb_log_columns

      content {
        name = columns.value[0]
        type = columns.value[1]
      }
    }
  }
}

resource "aws_athena_workgroup" "logs" {
  name        = "${var.name}-edge-logs"
  description = "Queries over the ${var.name} ALB access logs"

  configuration {
    enforce_workgroup_configuration    = true
    publish_cloudwatch_metrics_enabled = true
    # 10 GiB: a forgotten `day` filter must not scan months of logs.
    bytes_scanned_cutoff_per_query = 10737418240

    result_configuration {
      output_location = "s3://${aws_s3_bucket.logs.id}/athena-results/"

      encryption_configuration {
        encryption_option = "SSE_S3"
      }
    }
  }
}

# Every reconnect of the last day, with the target before and after: with
# app_cookie stickiness working, same_target is true except across a deploy
# or a failed target.
resource "aws_athena_named_query" "reconnects_same_target" {
  name        = "${var.name}-reconnects-same-target"
  description = "Consecutive WebSocket upgrades of one client (IP + User-Agent) within the session TTL, and whether they landed on the same target"
  workgroup   = aws_athena_workgroup.logs.id
  database    = aws_glue_catalog_database.logs.name
  query       = <<-SQL
    ${local.reconnects_sql}
    SELECT
      client_ip,
      user_agent,
      previous_started,
      started,
      previous_target_ip,
      target_ip,
      target_ip = previous_target_ip AS same_target
    FROM reconnects
    ORDER BY client_ip, user_agent, started
    LIMIT 10000
  SQL
}

# The same reconnects per hour: the share that stuck to their target.
resource "aws_athena_named_query" "reconnect_stickiness_by_hour" {
  name        = "${var.name}-reconnect-stickiness-by-hour"
  description = "Share of reconnects (same client within the session TTL) that landed on the same target, per hour"
  workgroup   = aws_athena_workgroup.logs.id
  database    = aws_glue_catalog_database.logs.name
  query       = <<-SQL
    ${local.reconnects_sql}
    SELECT
      date_trunc('hour', started) AS hour,
      count(*) AS reconnects,
      count_if(target_ip = previous_target_ip) AS same_target,
      round(100.0 * count_if(target_ip = previous_target_ip) / count(*), 2) AS same_target_pct
    FROM reconnects
    GROUP BY 1
    ORDER BY 1
  SQL
}
