//! OSS response bodies (XML), deserialized with quick-xml's serde support.

use serde::Deserialize;

/// `<Error>` bodies (and the base64 `x-oss-err` header of HEAD responses).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    pub request_id: String,
    #[serde(rename = "EC")]
    pub ec: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListBucketResult {
    #[serde(default)]
    pub is_truncated: bool,
    #[serde(default)]
    pub next_continuation_token: Option<String>,
    #[serde(default)]
    pub contents: Vec<Contents>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Contents {
    pub key: String,
    #[serde(default)]
    pub last_modified: Option<String>,
    #[serde(rename = "ETag", default)]
    pub etag: Option<String>,
    #[serde(default)]
    pub size: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InitiateMultipartUploadResult {
    pub upload_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListMultipartUploadsResult {
    #[serde(default)]
    pub is_truncated: bool,
    #[serde(default)]
    pub next_key_marker: Option<String>,
    #[serde(default)]
    pub next_upload_id_marker: Option<String>,
    #[serde(default)]
    pub upload: Vec<Upload>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Upload {
    pub key: String,
    pub upload_id: String,
}

/// Escapes text for an XML element body.
pub fn escape(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listing_and_errors() {
        let x = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult><Name>b</Name><Prefix>p%2F</Prefix><MaxKeys>1000</MaxKeys><EncodingType>url</EncodingType>
<IsTruncated>true</IsTruncated><NextContinuationToken>tok</NextContinuationToken>
<Contents><Key>p%2Fa%2Bb%20c</Key><LastModified>2026-11-25T00:00:01.000Z</LastModified><ETag>"5B1A"</ETag><Type>Normal</Type><Size>3</Size><StorageClass>Standard</StorageClass></Contents>
<Contents><Key>p%2Fz</Key><LastModified>2026-11-25T00:00:02.000Z</LastModified><ETag>"AA-2"</ETag><Size>0</Size></Contents>
<KeyCount>2</KeyCount></ListBucketResult>"#;
        let r: ListBucketResult = quick_xml::de::from_str(x).unwrap();
        assert!(r.is_truncated);
        assert_eq!(r.next_continuation_token.as_deref(), Some("tok"));
        assert_eq!(r.contents.len(), 2);
        assert_eq!(r.contents[0].key, "p%2Fa%2Bb%20c");
        assert_eq!(r.contents[0].size, 3);
        let e: ErrorBody = quick_xml::de::from_str(
            "<Error><Code>NoSuchKey</Code><Message>gone</Message><RequestId>R1</RequestId><HostId>h</HostId><EC>0026-00000001</EC></Error>",
        )
        .unwrap();
        assert_eq!(
            (e.code.as_str(), e.ec.as_str()),
            ("NoSuchKey", "0026-00000001")
        );
        let empty: ListBucketResult = quick_xml::de::from_str(
            "<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>",
        )
        .unwrap();
        assert!(empty.contents.is_empty());
    }
}
