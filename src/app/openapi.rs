//! The OpenAPI document served at `/openapi.json` and rendered at `/docs`: the
//! domains' annotated handlers, and the answers every operation may give.

use utoipa::openapi::path::Operation;
use utoipa::openapi::{Content, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::http::openapi::{ErrorDetail, ValidationErrorBody};

/// The API description served at `/openapi.json` and rendered at `/docs`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "clinscribe",
        description = "Clinical dictation service: recordings, uploads and their processing state. \
                       Wire-compatible with the original PWA service.",
        license(name = "MIT OR Apache-2.0")
    ),
    paths(
        crate::health::health,
        crate::health::live,
        crate::health::ready,
        super::status::status,
        crate::auth::api::sign_in,
        crate::auth::api::set_up,
        crate::auth::api::providers,
        crate::auth::api::single_sign_on_start,
        crate::auth::api::single_sign_on_callback,
        crate::auth::users_api::list_users,
        crate::auth::users_api::add_user,
        crate::auth::users_api::disable_user,
        crate::auth::api::me,
        crate::auth::api::sign_out,
        crate::auth::api::sign_out_everywhere,
        crate::recordings::api::create_recording,
        crate::recordings::api::list_recordings,
        crate::recordings::api::get_recording,
        crate::recordings::api::patch_recording,
        crate::recordings::api::retry_recording,
        crate::recordings::api::sign_recording,
        crate::recordings::api::amend_recording,
        crate::recordings::api::delete_recording,
        crate::recordings::api::list_changes,
        crate::recordings::api::history,
        crate::uploads::api::multipart::upload_recording,
        crate::uploads::api::download::download_audio,
        crate::uploads::api::chunked::start_upload,
        crate::uploads::api::chunked::upload_status,
        crate::uploads::api::chunked::upload_chunk,
        crate::guardrails::api::verify,
    ),
    components(schemas(ErrorDetail, ValidationErrorBody, crate::validation::ValidationIssue)),
    modifiers(&CommonResponses),
    tags(
        (name = "health", description = "Service health"),
        (name = "auth", description = "Signing in and out: API tokens (`Authorization: Bearer`) and browser sessions (a cookie and its CSRF token)"),
        (name = "users", description = "Accounts, for administrators: list, add, disable"),
        (name = "recordings", description = "Clinical recordings"),
        (name = "uploads", description = "Audio: uploads that are never lost or duplicated, chunked uploads, download"),
        (name = "guardrails", description = "Clinical checks: the facts of a text and the rules' alerts"),
    )
)]
pub struct ApiDoc;

/// The answers any operation may give, whatever its handler: added to every
/// operation here rather than repeated in each annotation.
///
/// - 421: the `Host` is not a name of this server (see `http::guard`);
/// - 503: the database is busy or unavailable (with `Retry-After`);
/// - state-changing operations: 403 (a page of another site), 507 (the
///   storage is full, with `Retry-After`).
struct CommonResponses;

/// Operations open to anyone: the health check, and signing in.
const PUBLIC_PATHS: [&str; 8] = [
    "/api/v1/health",
    "/api/v1/health/live",
    "/api/v1/health/ready",
    "/api/v1/auth/login",
    "/api/v1/auth/setup",
    "/api/v1/auth/providers",
    "/api/v1/auth/oidc/start",
    "/api/v1/auth/oidc/callback",
];

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityRequirement, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::auth::SESSION_COOKIE,
                "A browser session (POST /api/v1/auth/login); a state-changing request \
                 also sends the session's csrf_token in X-CSRF-Token",
            ))),
        );
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !PUBLIC_PATHS.contains(&path.as_str()) {
                let operations = [
                    &mut item.get,
                    &mut item.head,
                    &mut item.post,
                    &mut item.put,
                    &mut item.patch,
                    &mut item.delete,
                ];
                for operation in operations.into_iter().flatten() {
                    operation.security = Some(vec![
                        SecurityRequirement::new("bearer", Vec::<String>::new()),
                        SecurityRequirement::new("session", Vec::<String>::new()),
                    ]);
                    add_responses(
                        operation,
                        &[(
                            "401",
                            "No valid credentials (none, or a token or session that is unknown, \
                             expired, revoked, ended, or whose user is disabled); \
                             `WWW-Authenticate: Bearer`",
                        )],
                    );
                }
            }
            for operation in [&mut item.get, &mut item.head].into_iter().flatten() {
                add_common(operation, false);
            }
            for operation in [
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                add_common(operation, true);
            }
        }
    }
}

fn add_common(operation: &mut Operation, changes_state: bool) {
    let mut common = vec![
        (
            "421",
            "The Host header is not a name of this server (PWA_ALLOWED_HOSTS)",
        ),
        (
            "503",
            "The database is busy or unavailable; retry after `Retry-After` seconds",
        ),
    ];
    if changes_state {
        common.push((
            "403",
            "Sent by a page of another site (Origin or Sec-Fetch-Site; PWA_ALLOWED_ORIGINS), \
             or with the session cookie but without its X-CSRF-Token",
        ));
        common.push((
            "507",
            "The server's storage is full; nothing was stored; retry after `Retry-After` seconds",
        ));
    }
    add_responses(operation, &common);
}

/// Adds these `(status, description)` answers with an `ErrorDetail` body,
/// unless the operation documents the status itself.
fn add_responses(operation: &mut Operation, responses: &[(&str, &str)]) {
    for &(status, description) in responses {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| {
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/json",
                        Content::new(Some(Ref::from_schema_name("ErrorDetail"))),
                    )
                    .build()
                    .into()
            });
    }
}
