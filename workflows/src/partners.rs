//! The configured partners, by name.

use std::{collections::BTreeMap, sync::Arc};

use engine::ids::PartnerName;

use crate::{
    adapters::{DataClient, ResponseBudget},
    partner::{PartnerClient, PartnerConfig, PartnerConfigError},
};

#[derive(Clone, Default)]
pub struct Partners {
    oauth: Arc<BTreeMap<PartnerName, PartnerClient>>,
    data: Arc<BTreeMap<PartnerName, DataClient>>,
}

impl Partners {
    /// Builds a client per partner; the first bad configuration is reported with its name.
    pub fn from_config(
        configs: impl IntoIterator<Item = (String, PartnerConfig)>,
    ) -> Result<Self, (String, PartnerConfigError)> {
        let mut map = BTreeMap::new();
        let mut data = BTreeMap::new();
        for (name, config) in configs {
            let parsed = PartnerName::parse(&name)
                .map_err(|_| (name.clone(), PartnerConfigError::InvalidName(name.clone())))?;
            config.sync_policy().map_err(|e| {
                (
                    name.clone(),
                    PartnerConfigError::Invalid(format!("sync: {e}")),
                )
            })?;
            let data_client = DataClient::new(&name, &config)
                .map_err(|e| (name.clone(), PartnerConfigError::Invalid(e.to_string())))?;
            let client = PartnerClient::new(&name, config).map_err(|e| (name.clone(), e))?;
            data.insert(parsed.clone(), data_client);
            map.insert(parsed, client);
        }
        Ok(Self {
            oauth: Arc::new(map),
            data: Arc::new(data),
        })
    }

    /// The same partners, their data clients drawing on one process-wide response budget
    /// (`workers.response_memory_bytes`).
    pub fn with_response_budget(self, budget: ResponseBudget) -> Self {
        let data = self
            .data
            .iter()
            .map(|(name, client)| (name.clone(), client.clone().with_budget(budget.clone())))
            .collect();
        Self {
            oauth: self.oauth,
            data: Arc::new(data),
        }
    }

    pub fn get(&self, name: &str) -> Option<&PartnerClient> {
        let name = PartnerName::parse(name).ok()?;
        self.oauth.get(&name)
    }

    /// The partner's data API client.
    pub fn data(&self, name: &str) -> Option<&DataClient> {
        let name = PartnerName::parse(name).ok()?;
        self.data.get(&name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&PartnerName, &PartnerClient)> {
        self.oauth.iter()
    }

    pub fn len(&self) -> usize {
        self.oauth.len()
    }

    pub fn is_empty(&self) -> bool {
        self.oauth.is_empty()
    }
}
