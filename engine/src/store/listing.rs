//! ListObjectsV2 as S3 and OSS both answer it: the checks every page must pass and the
//! walk from page to page. The two stores differ only in how a page is fetched and
//! decoded (the SDK's output, or OSS's XML with URL-encoded keys); what a page must hold
//! and how the continuation token is followed are the same protocol, so they live here once.

use std::future::Future;

use super::{ObjectMeta, RawPages};
use crate::{Error, Result};

/// One object as a listing page gives it, before any check: its full key (the store's
/// prefix included) and what the server said of it.
pub(crate) struct Listed {
    pub full: String,
    pub size: Option<u64>,
    pub mtime_ms: Option<i64>,
    pub etag: Option<String>,
}

/// One checked listing page: objects and common prefixes relative to the store's root,
/// and the continuation token when the listing goes on.
pub(crate) struct ListPage {
    pub objects: Vec<ObjectMeta>,
    pub prefixes: Vec<String>,
    pub token: Option<String>,
}

/// A decoded page under `sub` (relative to `root`, the store's prefix) turned into our
/// entries. Anything that breaks the API's invariants (a key outside the prefix, no size,
/// a common prefix not one level down and ending in the delimiter, truncated without a
/// token) is a protocol error, never a shorter listing.
pub(crate) fn check_page(
    ctx: &str,
    root: &str,
    sub: &str,
    objects: impl ExactSizeIterator<Item = Listed>,
    prefixes: impl ExactSizeIterator<Item = String>,
    truncated: bool,
    token: Option<String>,
) -> Result<ListPage> {
    let mut page = Vec::with_capacity(objects.len());
    for o in objects {
        let Some(key) = o.full.strip_prefix(root).filter(|k| k.starts_with(sub)) else {
            return Err(Error::protocol(format!(
                "{ctx}: the server listed {:?}, outside the prefix asked for",
                o.full
            )));
        };
        if key.is_empty() {
            continue; // the prefix's own "directory" marker
        }
        let Some(size) = o.size else {
            return Err(Error::protocol(format!(
                "{ctx}: the listing gives {:?} no valid size",
                o.full
            )));
        };
        page.push(ObjectMeta {
            key: key.to_string(),
            size,
            mtime_ms: o.mtime_ms,
            etag: o.etag,
            ..Default::default()
        });
    }
    let mut levels = Vec::with_capacity(prefixes.len());
    for full in prefixes {
        match full.strip_prefix(root) {
            Some(p) if p.starts_with(sub) && p.len() > sub.len() && p.ends_with('/') => {
                levels.push(p.to_string())
            }
            _ => {
                return Err(Error::protocol(format!(
                    "{ctx}: the server listed the common prefix {full:?}, not one level under the prefix asked for"
                )))
            }
        }
    }
    let token = match (truncated, token) {
        (false, _) => None,
        (true, Some(t)) if !t.is_empty() => Some(t),
        (true, _) => {
            return Err(Error::protocol(format!(
                "{ctx}: the listing says it is truncated but gives no continuation token"
            )))
        }
    };
    Ok(ListPage {
        objects: page,
        prefixes: levels,
        token,
    })
}

/// Where the next page starts: the continuation token once there is one, else the
/// caller's `start_after` (relative), on the first request only.
pub(crate) struct Cursor {
    pub sub: String,
    pub token: Option<String>,
    pub start_after: Option<String>,
}

/// The pages of one listing under `sub`, fetched one after another by `fetch` until a page
/// has no continuation token; an error ends the stream after it is yielded.
pub(crate) fn paginate<'a, F, Fut>(
    sub: String,
    start_after: Option<String>,
    fetch: F,
) -> RawPages<'a>
where
    F: Fn(Cursor) -> Fut + Send + Sync + 'a,
    Fut: Future<Output = Result<ListPage>> + Send + 'a,
{
    let init = (
        Some(Cursor {
            sub,
            token: None,
            start_after,
        }),
        fetch,
    );
    Box::pin(futures::stream::unfold(
        init,
        |(cursor, fetch)| async move {
            let cursor = cursor?;
            let sub = cursor.sub.clone();
            match fetch(cursor).await {
                Ok(p) => {
                    let next = p.token.map(|token| Cursor {
                        sub,
                        token: Some(token),
                        start_after: None,
                    });
                    Some((Ok((p.objects, p.prefixes)), (next, fetch)))
                }
                Err(e) => Some((Err(e), (None, fetch))),
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use futures::StreamExt;

    fn obj(full: &str, size: Option<u64>) -> Listed {
        Listed {
            full: full.into(),
            size,
            mtime_ms: None,
            etag: None,
        }
    }

    fn check(
        objects: Vec<Listed>,
        prefixes: Vec<&str>,
        truncated: bool,
        token: Option<&str>,
    ) -> Result<ListPage> {
        let prefixes = prefixes.into_iter().map(String::from).collect::<Vec<_>>();
        check_page(
            "list",
            "root/",
            "sub/",
            objects.into_iter(),
            prefixes.into_iter(),
            truncated,
            token.map(String::from),
        )
    }

    #[test]
    fn a_page_is_made_relative_to_the_root() {
        let p = check(
            vec![obj("root/sub/a", Some(3))],
            vec!["root/sub/d/"],
            true,
            Some("t"),
        )
        .unwrap();
        assert_eq!(p.objects.len(), 1);
        assert_eq!((p.objects[0].key.as_str(), p.objects[0].size), ("sub/a", 3));
        assert_eq!(p.prefixes, vec!["sub/d/"]);
        assert_eq!(p.token.as_deref(), Some("t"));
        // The root's own "directory" marker is no key.
        let whole = [obj("root/", Some(0)), obj("root/a", Some(1))];
        let p = check_page(
            "list",
            "root/",
            "",
            whole.into_iter(),
            std::iter::empty(),
            false,
            None,
        );
        assert_eq!(p.unwrap().objects.len(), 1);
        // Not truncated: a token the server sends anyway is not followed.
        assert!(check(vec![], vec![], false, Some("t"))
            .unwrap()
            .token
            .is_none());
    }

    #[test]
    fn what_breaks_the_protocol_is_an_error_not_a_shorter_listing() {
        // objects, common prefixes, truncated, token, what the error says
        type Case<'a> = (Vec<Listed>, Vec<&'a str>, bool, Option<&'a str>, &'a str);
        let cases: Vec<Case> = vec![
            (
                vec![obj("other/sub/a", Some(1))],
                vec![],
                false,
                None,
                "outside the prefix",
            ),
            (
                vec![obj("root/elsewhere", Some(1))],
                vec![],
                false,
                None,
                "outside the prefix",
            ),
            (
                vec![obj("root/sub/a", None)],
                vec![],
                false,
                None,
                "no valid size",
            ),
            (
                vec![],
                vec!["root/sub/"],
                false,
                None,
                "not one level under",
            ),
            (
                vec![],
                vec!["root/sub/d"],
                false,
                None,
                "not one level under",
            ),
            (vec![], vec![], true, None, "no continuation token"),
            (vec![], vec![], true, Some(""), "no continuation token"),
        ];
        for (objects, prefixes, truncated, token, says) in cases {
            let e = check(objects, prefixes, truncated, token)
                .err()
                .expect(says);
            assert_eq!(e.kind(), ErrorKind::Protocol, "{e}");
            assert!(e.to_string().contains(says), "{e}");
        }
    }

    #[tokio::test]
    async fn pages_follow_the_token_and_stop_after_an_error() {
        use std::sync::Mutex;
        let asked = Mutex::new(Vec::new());
        let pages = paginate("sub/".into(), Some("sub/0".into()), |c: Cursor| {
            asked
                .lock()
                .unwrap()
                .push((c.token.clone(), c.start_after.clone()));
            let n = asked.lock().unwrap().len();
            async move {
                match n {
                    1 | 2 => Ok(ListPage {
                        objects: vec![],
                        prefixes: vec![format!("sub/{n}/")],
                        token: Some(format!("t{n}")),
                    }),
                    _ => Err(Error::protocol("page 3 failed")),
                }
            }
        });
        let got: Vec<_> = pages.collect().await;
        assert_eq!(got.len(), 3, "two pages, then the error, then nothing");
        assert!(got[2].is_err());
        assert_eq!(
            *asked.lock().unwrap(),
            vec![
                (None, Some("sub/0".to_string())),
                (Some("t1".to_string()), None),
                (Some("t2".to_string()), None),
            ]
        );
    }
}
