terraform {
  # Preconditions in lifecycle blocks need Terraform 1.2 or later.
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0, < 7.0"
    }
  }
}

provider "aws" {
  region = var.aws_region

  default_tags {
    tags = merge({ "app" = var.name }, var.tags)
  }
}
