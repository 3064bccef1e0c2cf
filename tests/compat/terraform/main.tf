# The seed's aws_cloudtrail resource, applied against cairn. The log bucket comes from
# cairn.toml until the full S3 API exists (issue 4).
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

variable "artifacts_bucket" {
  type    = string
  default = "acme-artifacts"
}

variable "ddb_tables_arnmap" {
  type = map(string)
  default = {
    packages = "arn:aws:dynamodb:us-east-1:123456789012:table/acme-packages"
    releases = "arn:aws:dynamodb:us-east-1:123456789012:table/acme-releases"
  }
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
  }
}

resource "aws_cloudtrail" "audit_trail" {
  name                          = "acme-audit-trail"
  s3_bucket_name                = "acme-artifacts-cloudtrail-logs-tf"
  include_global_service_events = true
  is_multi_region_trail         = true
  enable_logging                = true
  enable_log_file_validation    = true

  event_selector {
    read_write_type           = "All"
    include_management_events = true

    data_resource {
      type   = "AWS::S3::Object"
      values = ["arn:aws:s3:::${var.artifacts_bucket}/*"]
    }
  }

  event_selector {
    read_write_type           = "All"
    include_management_events = true

    data_resource {
      type   = "AWS::DynamoDB::Table"
      values = values(var.ddb_tables_arnmap)
    }
  }

  tags = {
    Project = "acme"
  }
}

output "trail_arn" {
  value = aws_cloudtrail.audit_trail.arn
}
