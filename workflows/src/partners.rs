//! The configured partners, by name.

use std::{collections::BTreeMap, sync::Arc};

use engine::ids::PartnerName;

use crate::partner::{PartnerClient, PartnerConfig, PartnerConfigError};

#[derive(Clone, Default)]
pub struct Partners(Arc<BTreeMap<PartnerName, PartnerClient>>);

impl Partners {
    /// Builds a client per partner; the first bad configuration is reported with its name.
    pub fn from_config(
        configs: impl IntoIterator<Item = (String, PartnerConfig)>,
    ) -> Result<Self, (String, PartnerConfigError)> {
        let mut map = BTreeMap::new();
        for (name, config) in configs {
            let parsed = PartnerName::parse(&name)
                .map_err(|_| (name.clone(), PartnerConfigError::InvalidName(name.clone())))?;
            let client = PartnerClient::new(&name, config).map_err(|e| (name.clone(), e))?;
            map.insert(parsed, client);
        }
        Ok(Self(Arc::new(map)))
    }

    pub fn get(&self, name: &str) -> Option<&PartnerClient> {
        let name = PartnerName::parse(name).ok()?;
        self.0.get(&name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&PartnerName, &PartnerClient)> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
