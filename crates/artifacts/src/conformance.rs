//! The [`ArtifactStore`] contract as code: one check every implementation passes, the file
//! system's, the in-memory one and any backend added later (run it on an empty store).

use crate::{ArtifactStore, Error, hash};

/// Fails with the first rule `store` breaks, naming it. `store` must be empty: it is written to.
pub async fn check(store: &dyn ArtifactStore) -> Result<(), String> {
    blobs(store).await?;
    documents(store).await?;
    names(store).await
}

fn expect(ok: bool, rule: &str) -> Result<(), String> {
    if ok { Ok(()) } else { Err(rule.to_owned()) }
}

fn fail(rule: &str) -> impl FnOnce(Error) -> String + '_ {
    move |e| format!("{rule}: {e}")
}

async fn blobs(store: &dyn ArtifactStore) -> Result<(), String> {
    let h = store.put(b"hello", "text/plain").await.map_err(fail("put"))?;
    expect(
        h.hash == "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
        "a blob is named by the SHA-256 of its bytes",
    )?;
    expect(h.size == 5 && h.media_type == "text/plain", "the handle gives the size and the media type")?;
    let again = store.put(b"hello", "text/plain").await.map_err(fail("put again"))?;
    expect(again == h, "putting the same bytes again gives the same handle")?;
    expect(store.get(&h.hash).await.map_err(fail("get"))? == b"hello", "get returns the bytes put")?;
    expect(store.verify(&h).await, "a stored blob verifies")?;
    let empty = store.put(b"", "text/plain").await.map_err(fail("put of nothing"))?;
    expect(store.get(&empty.hash).await.map_err(fail("get of nothing"))?.is_empty(), "an empty blob is a blob")?;
    let absent = hash(b"never stored");
    expect(matches!(store.get(&absent).await, Err(Error::NotFound { .. })), "a blob never put is NotFound")?;
    expect(
        !store.verify(&crate::Handle { hash: absent, size: 0, media_type: String::new() }).await,
        "a blob never put does not verify",
    )?;
    expect(matches!(store.get("sha256:zz").await, Err(Error::BadHash(_))), "a malformed hash is BadHash")
}

async fn documents(store: &dyn ArtifactStore) -> Result<(), String> {
    let read = |scope: &'static str, name: &'static str| async move {
        store.read_document(scope, name).await.map_err(fail("read_document"))
    };
    expect(read("job-1", "run_ledger.json").await?.is_none(), "a document never written reads as None")?;
    store.write_document("job-1", "run_ledger.json", b"v1").await.map_err(fail("write_document"))?;
    expect(read("job-1", "run_ledger.json").await?.as_deref() == Some(b"v1"), "a document reads as written")?;
    store.write_document("job-1", "run_ledger.json", b"v2").await.map_err(fail("write_document again"))?;
    expect(read("job-1", "run_ledger.json").await?.as_deref() == Some(b"v2"), "a write replaces the document")?;
    store.write_document("job-1", "run_ledger.json", b"").await.map_err(fail("write of nothing"))?;
    expect(read("job-1", "run_ledger.json").await?.as_deref() == Some(b""), "an empty document is not an absent one")?;
    expect(read("job-2", "run_ledger.json").await?.is_none(), "scopes are separate")?;
    let batch: [(&str, &[u8]); 3] = [("run_ledger.json", b"v3"), ("metrics.json", b"m"), ("escalations/e1.json", b"e")];
    store.write_documents("job-4", &batch).await.map_err(fail("write_documents"))?;
    store.write_documents("job-4", &batch[..1]).await.map_err(fail("write_documents again"))?;
    for (name, bytes) in batch {
        let got = store.read_document("job-4", name).await.map_err(fail("read_document"))?;
        expect(got.as_deref() == Some(bytes), "write_documents writes every document of the batch")?;
    }
    let refused = store.write_documents("job-5", &[("fine.json", b"x"), ("../escape", b"x")]).await;
    expect(matches!(refused, Err(Error::BadName { .. })), "a batch with a bad name is refused as BadName")?;
    let touched = store.list_documents("job-5", "").await.map_err(fail("list_documents"))?;
    expect(touched.is_empty(), "a refused batch writes none of its documents")?;
    for name in ["step_outputs/k2/response.txt", "step_outputs/k1/response.txt", "step_outputs/k1/prompt.txt", "steps"]
    {
        store.write_document("job-1", name, name.as_bytes()).await.map_err(fail("write_document"))?;
    }
    store.write_document("job-2", "step_outputs/k9/response.txt", b"x").await.map_err(fail("write_document"))?;
    let list = |prefix: &'static str| async move {
        store.list_documents("job-1", prefix).await.map_err(fail("list_documents"))
    };
    expect(
        list("step_outputs/").await?
            == ["step_outputs/k1/prompt.txt", "step_outputs/k1/response.txt", "step_outputs/k2/response.txt"],
        "a listing gives the names under the prefix, sorted",
    )?;
    expect(list("step_outputs/k1/r").await? == ["step_outputs/k1/response.txt"], "a prefix may end inside a name")?;
    expect(
        list("").await?
            == [
                "run_ledger.json",
                "step_outputs/k1/prompt.txt",
                "step_outputs/k1/response.txt",
                "step_outputs/k2/response.txt",
                "steps",
            ],
        "an empty prefix lists the whole scope",
    )?;
    expect(list("nothing/").await?.is_empty(), "a prefix nothing starts with lists nothing")?;
    let other = store.list_documents("job-3", "").await.map_err(fail("list_documents"))?;
    expect(other.is_empty(), "a scope never written lists nothing")?;
    expect(!store.location("job-1").is_empty(), "a scope has a location to show")
}

async fn names(store: &dyn ArtifactStore) -> Result<(), String> {
    for (scope, name) in [("job-1", "../escape"), ("job-1", "a//b"), ("job-1", ".hidden"), ("a/b", "x"), ("", "x")] {
        let refused = |r: Result<(), Error>| matches!(r, Err(Error::BadName { .. }));
        let write = store.write_document(scope, name, b"x").await;
        let read = store.read_document(scope, name).await.map(|_| ());
        expect(refused(write) && refused(read), &format!("`{scope}` / `{name}` is refused as BadName"))?;
    }
    let listed = store.list_documents("../job-1", "").await;
    expect(matches!(listed, Err(Error::BadName { .. })), "a listing of a bad scope is refused as BadName")
}
