# The seed's KMS key (its CloudTrail statement verbatim, rotation on, a deletion window), its
# alias, a log bucket whose default encryption is SSE-KMS under it, and the trail encrypting
# its log files with it — all created by Terraform against cairn.
terraform {
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "5.100.0"
    }
  }
}

variable "endpoint" {
  type = string
}

provider "aws" {
  region                      = "us-east-1"
  skip_credentials_validation = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
  s3_use_path_style           = true
  endpoints {
    cloudtrail = var.endpoint
    sts        = var.endpoint
    iam        = var.endpoint
    s3         = var.endpoint
    kms        = var.endpoint
  }
}

data "aws_caller_identity" "current" {}

locals {
  trail_arn = "arn:aws:cloudtrail:us-east-1:${data.aws_caller_identity.current.account_id}:trail/acme-audit-trail"
}

resource "aws_kms_key" "main_key" {
  description             = "acme-main-key"
  enable_key_rotation     = true
  deletion_window_in_days = 7
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "Enable IAM User Permissions"
        Effect    = "Allow"
        Principal = { AWS = "arn:aws:iam::${data.aws_caller_identity.current.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        Sid       = "Allow CloudTrail to encrypt logs"
        Effect    = "Allow"
        Principal = { Service = "cloudtrail.amazonaws.com" }
        Action    = ["kms:GenerateDataKey", "kms:Decrypt"]
        Condition = { StringEquals = { "AWS:SourceArn" = local.trail_arn } }
      }
    ]
  })
}

resource "aws_kms_alias" "main_key" {
  name          = "alias/acme-main-key"
  target_key_id = aws_kms_key.main_key.key_id
}

resource "aws_s3_bucket" "cloudtrail_logs" {
  bucket        = "acme-kms-cloudtrail-logs"
  force_destroy = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "cloudtrail_logs" {
  bucket = aws_s3_bucket.cloudtrail_logs.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.main_key.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_cloudtrail" "audit_trail" {
  name                          = "acme-audit-trail"
  s3_bucket_name                = aws_s3_bucket.cloudtrail_logs.id
  include_global_service_events = true
  is_multi_region_trail         = true
  enable_logging                = true
  enable_log_file_validation    = true
  kms_key_id                    = aws_kms_key.main_key.arn
  depends_on                    = [aws_s3_bucket_server_side_encryption_configuration.cloudtrail_logs]
}

output "key_arn" {
  value = aws_kms_key.main_key.arn
}
