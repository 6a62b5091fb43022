//! `GET /v1/partners`: the partners a user can connect to.

use poem_openapi::{OpenApi, payload::Json};
use workflows::Workflows;

use crate::{ApiTags, models::PartnerJson, problem::endpoint_response, security::BearerAuth};

endpoint_response! {
    pub enum ListPartnersResponse {
        /// The configured partners, by name.
        Ok(Json<Vec<PartnerJson>>) = 200,
    }
    problems {
        /// Missing or invalid bearer token (`unauthenticated`).
        Unauthorized = 401,
    }
}

pub struct PartnersApi {
    pub workflows: Workflows,
}

#[OpenApi(prefix_path = "/v1", tag = "ApiTags::Partners")]
impl PartnersApi {
    /// The configured partners. Any authenticated role.
    #[oai(path = "/partners", method = "get", operation_id = "listPartners")]
    async fn list(&self, BearerAuth(_caller): BearerAuth) -> ListPartnersResponse {
        let partners = self
            .workflows
            .partners()
            .iter()
            .map(|(name, client)| PartnerJson::new(name.as_str(), client.config()))
            .collect();
        ListPartnersResponse::Ok(Json(partners))
    }
}
