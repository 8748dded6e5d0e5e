//! The registry, typed: register, unregister, get, list, find, live, registries, digest.

use osp_protocol::registry::queries::{
    Digest, DigestQuery, EntryView, FindQuery, GetQuery, ListQuery, Page, PageRequest, RegisterOutcome, Registries,
    RegistriesQuery, UnregisterOutcome,
};
use osp_protocol::registry::{Command, Document, EntryDoc, Unregister, SERVICE};

use crate::{Answer, Client, Error, Result};

/// The registry, through a [`Client`].
#[derive(Clone, Debug)]
pub struct Registry {
    client: Client,
}

impl Client {
    /// The registry service.
    pub fn registry(&self) -> Registry {
        Registry { client: self.clone() }
    }
}

impl Registry {
    /// Adds `entry`, or replaces the entry of that name with it (the old version stays in
    /// the log).
    pub async fn register(&self, entry: &EntryDoc) -> Result<Answer<RegisterOutcome>> {
        self.client.send(&Command::Register(entry.clone())).await
    }

    /// Removes an entry; `false` when there was none of that name (the registry records
    /// the refusal).
    pub async fn unregister(&self, registry: &str, name: &str, reason: Option<String>) -> Result<bool> {
        let command = Command::Unregister(Unregister::new(registry, name, reason)?);
        match self.client.send::<_, UnregisterOutcome>(&command).await {
            Ok(answer) => Ok(answer.result.existed),
            Err(Error::Rejected { error: osp_protocol::Error::NotFound { .. }, .. }) => Ok(false),
            Err(other) => Err(other),
        }
    }

    /// One entry, or `None`.
    pub async fn get(&self, registry: &str, name: &str) -> Result<Option<EntryView>> {
        let query = GetQuery { registry: registry.to_owned(), name: name.to_owned() };
        match self.client.query(SERVICE, "get", &query).await {
            Ok(answer) => Ok(Some(answer.result)),
            Err(Error::Rejected { error: osp_protocol::Error::NotFound { .. }, .. }) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// One page of a registry's entries, by name.
    pub async fn list(&self, registry: &str, page: PageRequest) -> Result<Page> {
        let query = ListQuery { registry: registry.to_owned(), after: page.after, limit: page.limit };
        Ok(self.client.query(SERVICE, "list", &query).await?.result)
    }

    /// One page of the entries whose resource matches `criteria`.
    pub async fn find(&self, query: &FindQuery) -> Result<Page> {
        Ok(self.client.query(SERVICE, "find", query).await?.result)
    }

    /// One page of the agents online now.
    pub async fn live(&self, page: PageRequest) -> Result<Page> {
        Ok(self.client.query(SERVICE, "live", &page).await?.result)
    }

    /// Every entry of a registry, page after page.
    pub async fn list_all(&self, registry: &str) -> Result<Vec<EntryView>> {
        all_pages(|after| self.list(registry, PageRequest { after, limit: None })).await
    }

    /// Every entry of `registry` matching `criteria` (online agents only with `live_only`).
    pub async fn find_all(&self, registry: &str, criteria: Document, live_only: bool) -> Result<Vec<EntryView>> {
        all_pages(|after| {
            let query = FindQuery {
                registry: registry.to_owned(),
                criteria: Some(criteria.clone()),
                live: live_only,
                after,
                limit: None,
            };
            async move { self.find(&query).await }
        })
        .await
    }

    /// The registries that hold entries, with how many each holds.
    pub async fn registries(&self) -> Result<Registries> {
        Ok(self.client.query(SERVICE, "registries", &RegistriesQuery {}).await?.result)
    }

    /// A fingerprint of the answering instance's whole state.
    pub async fn digest(&self) -> Result<Answer<Digest>> {
        self.client.query(SERVICE, "digest", &DigestQuery {}).await
    }
}

/// Follows `next` cursors until the last page.
async fn all_pages<F, Fut>(mut page: F) -> Result<Vec<EntryView>>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = Result<Page>>,
{
    let mut entries = Vec::new();
    let mut after = None;
    loop {
        let Page { entries: more, next } = page(after).await?;
        entries.extend(more);
        match next {
            Some(next) => after = Some(next),
            None => return Ok(entries),
        }
    }
}
