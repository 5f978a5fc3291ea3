//! `GET /v1/openapi.json`: the API described from the handlers' own
//! annotations, so the document cannot drift from the code (a test also
//! checks every documented operation against the router).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Outpost control plane",
        description = "Tenants deploy WebAssembly workers; edge nodes follow the desired state.",
        version = "1"
    ),
    paths(
        super::tenants::create,
        super::tenants::list,
        super::tenants::set_limits,
        super::apps::create,
        super::apps::list,
        super::apps::show,
        super::apps::delete,
        super::apps::set_routes,
        super::apps::set_outbound,
        super::apps::set_env,
        super::apps::patch_env,
        super::apps::deploy,
        super::apps::deployments,
        super::apps::rollback,
        super::apps::module,
        super::certs::put,
        super::certs::list,
        super::certs::delete,
        super::nodes::report,
        super::logs::ingest,
        super::logs::read,
        super::nodes::list,
        super::nodes::rollout,
        crate::watch::watch,
    ),
    components(schemas(
        outpost_proto::ErrorBody,
        outpost_proto::ErrorDetail,
        outpost_proto::Limits,
        outpost_proto::CreateTenant,
        outpost_proto::TenantCreated,
        outpost_proto::Tenant,
        outpost_proto::CreateApp,
        outpost_proto::App,
        outpost_proto::SetRoutes,
        outpost_proto::SetOutbound,
        outpost_proto::Deployment,
        outpost_proto::Rollback,
        outpost_proto::AppSpec,
        outpost_proto::Snapshot,
        outpost_proto::CertSpec,
        outpost_proto::CertUpload,
        outpost_proto::CertInfo,
        outpost_proto::Delta,
        outpost_proto::WatchEvent,
        outpost_proto::NodeReport,
        outpost_proto::NodeStatus,
        outpost_proto::Rollout,
        outpost_proto::GuestLogLine,
    )),
    modifiers(&BearerTokens)
)]
pub struct ApiDoc;

/// The three bearer tokens: admin, tenant (`bearer`), node.
struct BearerTokens;

impl Modify for BearerTokens {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for name in ["admin", "bearer", "node"] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

/// The handler.
pub async fn document() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}
