//! OSS response bodies (XML), deserialized with quick-xml's serde support.
//!
//! serde ignores the document's root element name, so an HTML page or another API's
//! document would deserialize into an empty listing: [`parse`] checks the root first.

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::{Error, Result};

/// The name of the document's root element, if the body is XML at all.
pub fn root_name(body: &[u8]) -> Option<String> {
    let mut r = quick_xml::Reader::from_reader(body);
    let mut buf = Vec::new();
    loop {
        match r.read_event_into(&mut buf) {
            Ok(quick_xml::events::Event::Start(e)) | Ok(quick_xml::events::Event::Empty(e)) => {
                return Some(String::from_utf8_lossy(e.name().as_ref()).into_owned())
            }
            Ok(quick_xml::events::Event::Eof) | Err(_) => return None,
            Ok(quick_xml::events::Event::DocType(_)) => return None, // HTML
            Ok(_) => {}
        }
        buf.clear();
    }
}

/// Deserializes `body` as the document `root`; anything else is a protocol error.
pub fn parse<T: DeserializeOwned>(ctx: &str, body: &[u8], root: &str) -> Result<T> {
    match root_name(body) {
        Some(r) if r == root => {}
        Some(r) => {
            return Err(Error::protocol(format!(
                "{ctx}: the answer is a <{r}> document, not OSS's <{root}>"
            )))
        }
        None => {
            return Err(Error::protocol(format!(
                "{ctx}: the answer is not XML (an HTML page or other text), not OSS's <{root}>"
            )))
        }
    }
    quick_xml::de::from_str(&String::from_utf8_lossy(body))
        .map_err(|e| Error::protocol(format!("{ctx}: unreadable <{root}>: {e}")).with_source(e))
}

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
    #[serde(default)]
    pub common_prefixes: Vec<CommonPrefix>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CommonPrefix {
    pub prefix: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Contents {
    pub key: String,
    #[serde(default)]
    pub last_modified: Option<String>,
    #[serde(rename = "ETag", default)]
    pub etag: Option<String>,
    /// Absent is a protocol error (checked by the store), never a 0-byte object.
    #[serde(default)]
    pub size: Option<u64>,
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
    #[serde(default)]
    pub initiated: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListPartsResult {
    #[serde(default)]
    pub is_truncated: bool,
    #[serde(default)]
    pub next_part_number_marker: Option<String>,
    #[serde(default)]
    pub part: Vec<Part>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Part {
    pub part_number: u32,
    #[serde(rename = "ETag")]
    pub etag: String,
    pub size: u64,
    #[serde(default)]
    pub hash_crc64ecma: Option<u64>,
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
        assert_eq!(r.contents[0].size, Some(3));
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

    #[test]
    fn only_the_api_document_is_accepted() {
        use crate::error::ErrorKind;
        let ok: ListBucketResult = parse(
            "list",
            b"<?xml version=\"1.0\"?>\n<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>",
            "ListBucketResult",
        )
        .unwrap();
        assert!(ok.contents.is_empty());
        for body in [
            &b"<!DOCTYPE html><html><body>It works</body></html>"[..],
            b"<html><body>hi</body></html>",
            b"<ListAllMyBucketsResult></ListAllMyBucketsResult>",
            b"not xml at all",
            b"",
        ] {
            let e = parse::<ListBucketResult>("list", body, "ListBucketResult").unwrap_err();
            assert_eq!(
                e.kind(),
                ErrorKind::Protocol,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
