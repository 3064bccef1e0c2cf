# A DynamoDB table (hash and range keys, on-demand, a GSI, TTL, point-in-time recovery, tags)
# created through cairn in its upstream, and the seed's trail shape selecting the table's data
# events by the ARN Terraform reads back.
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
    dynamodb   = var.endpoint
  }
}

resource "aws_dynamodb_table" "orders" {
  name         = "acme-orders"
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "customer"
  range_key    = "order_id"

  attribute {
    name = "customer"
    type = "S"
  }
  attribute {
    name = "order_id"
    type = "S"
  }
  attribute {
    name = "status"
    type = "S"
  }

  global_secondary_index {
    name            = "by-status"
    hash_key        = "status"
    projection_type = "ALL"
  }

  ttl {
    attribute_name = "expires_at"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  tags = {
    Environment = "production"
    Purpose     = "orders"
  }
}

resource "aws_s3_bucket" "logs" {
  bucket        = "acme-ddb-cloudtrail-logs"
  force_destroy = true
}

resource "aws_cloudtrail" "trail" {
  name           = "acme-ddb-trail"
  s3_bucket_name = aws_s3_bucket.logs.id

  event_selector {
    read_write_type           = "All"
    include_management_events = true

    data_resource {
      type   = "AWS::DynamoDB::Table"
      values = [aws_dynamodb_table.orders.arn]
    }
  }
}

output "table_arn" {
  value = aws_dynamodb_table.orders.arn
}
