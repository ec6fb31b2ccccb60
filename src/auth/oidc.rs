//! Single sign-on with an OpenID Connect provider: the authorization code
//! flow with PKCE, `state` and `nonce`, and the ID token checked by the
//! `openidconnect` crate (signature from the issuer's JWKS, issuer,
//! audience, expiry, nonce). A login under way is kept in `oidc_logins`, so
//! the provider may send the browser back to any instance.
//!
//! Users are matched by the provider's subject (`sub`). An unknown subject
//! becomes a new clinician (`PWA_OIDC_AUTO_CREATE`, on by default) or is
//! refused; an administrator links a subject to an existing account with
//! `clinscribe user add ID --oidc-subject SUB`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType,
    CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreProviderMetadata, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AuthorizationCode, ClaimsVerificationError, Client, ClientId, ClientSecret,
    CsrfToken, EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet, IdTokenFields,
    IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    SignatureVerificationError, StandardErrorResponse, StandardTokenResponse, TokenResponse as _,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::model::{self, Role, User};
use super::store::{LoginStore, NewUser, PendingLogin};
use super::{Authenticator, SignedIn, constant_time_eq};
use crate::db::StoreError;
use crate::timestamp::Timestamp;

/// How long a login may take between leaving for the provider and coming back.
pub const LOGIN_TTL: Duration = Duration::from_secs(600);
/// The provider's metadata and keys are fetched again after this long (and
/// at once when an ID token names a key they lack: a key rotation).
const METADATA_TTL: Duration = Duration::from_secs(3600);
/// The longest a request to the provider may take.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);
/// The path of the callback, under the server's own origin.
pub const CALLBACK_PATH: &str = "/api/v1/auth/oidc/callback";

/// `PWA_OIDC_*`: the provider and how its users become ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcSettings {
    /// The issuer (`PWA_OIDC_ISSUER`); its discovery document is at
    /// `/.well-known/openid-configuration` under it.
    pub issuer: String,
    /// This server's client id at the provider (`PWA_OIDC_CLIENT_ID`).
    pub client_id: String,
    /// Its secret (`PWA_OIDC_CLIENT_SECRET`); none for a public client.
    pub client_secret: Option<String>,
    /// Whether an unknown subject becomes a new clinician (`PWA_OIDC_AUTO_CREATE`).
    pub auto_create: bool,
    /// The ID token claim that makes an admin (`PWA_OIDC_ADMIN_CLAIM`); when
    /// set, each sign-in sets the role from it.
    pub admin_claim: Option<String>,
    /// The value of that claim (or one of its values) that means admin
    /// (`PWA_OIDC_ADMIN_VALUE`).
    pub admin_value: String,
    /// The scopes asked for besides `openid` (`PWA_OIDC_SCOPES`).
    pub scopes: Vec<String>,
    /// The callback URL registered at the provider (`PWA_OIDC_REDIRECT_URL`);
    /// when unset, derived from each request's host and scheme.
    pub redirect_url: Option<String>,
    /// The provider's name on the sign-in page (`PWA_OIDC_NAME`).
    pub name: String,
}

/// Why a single sign-on did not sign anyone in. Each has a short code the
/// sign-in page turns into a sentence (`/signin?error=CODE`).
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// `PWA_OIDC_ISSUER` is not set.
    #[error("single sign-on is not configured on this server")]
    NotConfigured,
    /// The provider could not be reached, or answered something unusable.
    #[error("the identity provider could not be reached or gave an unusable answer: {0}")]
    Provider(String),
    /// No login of this browser under way with that `state` (expired, used,
    /// started in another browser, or forged).
    #[error("the sign-in expired or was not started in this browser")]
    BadState,
    /// The provider refused (the user cancelled, or is not allowed).
    #[error("the identity provider refused the sign-in: {0}")]
    Refused(String),
    /// The ID token failed a check (signature, issuer, audience, expiry, nonce).
    #[error("the identity provider's ID token is not valid: {0}")]
    InvalidIdToken(String),
    /// An unknown subject, and `PWA_OIDC_AUTO_CREATE=false`.
    #[error("no account is registered for this identity")]
    UnknownUser,
    /// The account is disabled.
    #[error("this account is disabled")]
    Disabled,
    /// The id a new account would get belongs to another account.
    #[error("an account {0:?} exists already and is not linked to this identity")]
    IdTaken(String),
    /// The provider named the user in no way that makes a valid user id.
    #[error("the identity provider gave no usable user name")]
    NoUsableId,
    /// The database could not answer.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl OidcError {
    /// The code the sign-in page shows a sentence for.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotConfigured => "not-configured",
            Self::Provider(_) => "provider",
            Self::BadState => "expired",
            Self::Refused(_) => "refused",
            Self::InvalidIdToken(_) => "invalid",
            Self::UnknownUser => "unknown",
            Self::Disabled => "disabled",
            Self::IdTaken(_) => "taken",
            Self::NoUsableId => "no-id",
            Self::Store(_) => "unavailable",
        }
    }
}

/// The claims of an ID token beyond the standard ones (where an admin claim is).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OtherClaims(HashMap<String, serde_json::Value>);

impl AdditionalClaims for OtherClaims {}

type ProviderTokenResponse = StandardTokenResponse<
    IdTokenFields<
        OtherClaims,
        EmptyExtraTokenFields,
        CoreGenderClaim,
        CoreJweContentEncryptionAlgorithm,
        CoreJwsSigningAlgorithm,
    >,
    CoreTokenType,
>;

/// The client of the code flow, as made from the provider's metadata.
type ProviderClient = Client<
    OtherClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    ProviderTokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Who the provider says signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalIdentity {
    /// The provider's stable id of the person (`sub`).
    pub subject: String,
    /// `preferred_username`, else `email`: the id of a new account.
    pub username: Option<String>,
    /// `name`.
    pub display_name: Option<String>,
    /// Whether the admin claim says admin (None when no claim is configured).
    pub admin: Option<bool>,
}

/// A login begun: where to send the browser, and the `state` its cookie keeps.
#[derive(Debug, Clone)]
pub struct Started {
    /// The provider's authorization URL.
    pub authorize_url: String,
    /// The `state` of the request.
    pub state: String,
}

/// What the provider sent the browser back with.
#[derive(Debug, Clone, Copy, Default)]
pub struct Callback<'a> {
    /// The authorization code.
    pub code: Option<&'a str>,
    /// The `state` of the request.
    pub state: Option<&'a str>,
    /// The provider's error code, when it refused.
    pub error: Option<&'a str>,
    /// The `state` this browser's cookie holds.
    pub cookie_state: Option<&'a str>,
}

/// What a single sign-on did to the account, for the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountChange {
    /// An existing account, unchanged.
    None,
    /// A new account.
    Created,
    /// The admin claim changed the role.
    RoleChanged(Role),
}

/// The provider: its settings, its metadata (fetched when first needed, so
/// that a provider down at start does not stop the server) and the logins
/// under way.
#[derive(Debug, Clone)]
pub struct SingleSignOn {
    settings: Arc<OidcSettings>,
    issuer: IssuerUrl,
    http: reqwest::Client,
    logins: Arc<dyn LoginStore>,
    metadata: Arc<tokio::sync::Mutex<Option<(Instant, CoreProviderMetadata)>>>,
}

/// The errors of the HTTP client the crate's requests go through.
#[derive(Debug, thiserror::Error)]
enum HttpError {
    #[error(transparent)]
    Reqwest(#[from] reqwest::Error),
    #[error(transparent)]
    Http(#[from] openidconnect::http::Error),
}

/// Sends one of the crate's requests with reqwest (the client the remote
/// transcription engines and the object store use already).
async fn send(
    http: reqwest::Client,
    request: openidconnect::HttpRequest,
) -> Result<openidconnect::HttpResponse, HttpError> {
    let response = http.execute(reqwest::Request::try_from(request)?).await?;
    let mut built = openidconnect::http::Response::builder().status(response.status());
    for (name, value) in response.headers() {
        built = built.header(name, value);
    }
    Ok(built.body(response.bytes().await?.to_vec())?)
}

fn sha256_hex(text: &str) -> String {
    crate::digest::hex(&Sha256::digest(text.as_bytes()))
}

impl SingleSignOn {
    /// The provider of `settings`, its logins kept in `logins`.
    pub fn new(settings: OidcSettings, logins: Arc<dyn LoginStore>) -> Result<Self, OidcError> {
        let issuer = IssuerUrl::new(settings.issuer.clone())
            .map_err(|e| OidcError::Provider(format!("PWA_OIDC_ISSUER: {e}")))?;
        let http = reqwest::Client::builder()
            // Following redirects would let a provider's answer send us anywhere.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(PROVIDER_TIMEOUT)
            .build()
            .map_err(|e| OidcError::Provider(e.to_string()))?;
        Ok(Self {
            settings: Arc::new(settings),
            issuer,
            http,
            logins,
            metadata: Arc::default(),
        })
    }

    /// The provider's name on the sign-in page.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// The callback URL registered at the provider, if fixed by the settings.
    pub fn redirect_url(&self) -> Option<&str> {
        self.settings.redirect_url.as_deref()
    }

    async fn metadata(&self) -> Result<CoreProviderMetadata, OidcError> {
        let mut cached = self.metadata.lock().await;
        if let Some((at, metadata)) = cached.as_ref()
            && at.elapsed() < METADATA_TTL
        {
            return Ok(metadata.clone());
        }
        let http = self.http.clone();
        let fetched = CoreProviderMetadata::discover_async(self.issuer.clone(), &move |request| {
            send(http.clone(), request)
        })
        .await
        .map_err(|e| OidcError::Provider(format!("discovery: {}", error_chain(&e))))?;
        *cached = Some((Instant::now(), fetched.clone()));
        Ok(fetched)
    }

    fn client(
        &self,
        metadata: CoreProviderMetadata,
        redirect_uri: &str,
    ) -> Result<ProviderClient, OidcError> {
        let redirect = RedirectUrl::new(redirect_uri.to_owned())
            .map_err(|e| OidcError::Provider(format!("redirect URL: {e}")))?;
        Ok(ProviderClient::from_provider_metadata(
            metadata,
            ClientId::new(self.settings.client_id.clone()),
            self.settings.client_secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(redirect))
    }

    /// Begins a login that comes back to `redirect_uri` and then goes to
    /// `return_to` (a path of ours).
    pub async fn start(&self, redirect_uri: &str, return_to: &str) -> Result<Started, OidcError> {
        let client = self.client(self.metadata().await?, redirect_uri)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in &self.settings.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.url();
        let login = PendingLogin {
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
            redirect_uri: redirect_uri.to_owned(),
            return_to: return_to.to_owned(),
            created_at: Timestamp::now(),
        };
        self.logins
            .insert(&login, &sha256_hex(state.secret()))
            .await?;
        Ok(Started {
            authorize_url: url.to_string(),
            state: state.secret().clone(),
        })
    }

    /// Finishes a login: checks the `state` against this browser's cookie,
    /// exchanges the code (with the PKCE verifier) and checks the ID token.
    /// Returns who signed in, and the page to go to.
    pub async fn finish(
        &self,
        callback: Callback<'_>,
    ) -> Result<(ExternalIdentity, String), OidcError> {
        let state = callback.state.ok_or(OidcError::BadState)?;
        let same_browser = callback
            .cookie_state
            .is_some_and(|c| constant_time_eq(c.as_bytes(), state.as_bytes()));
        if !same_browser {
            return Err(OidcError::BadState);
        }
        // Taken before anything else: a state works once, even a refused one.
        let login = self
            .logins
            .take(&sha256_hex(state))
            .await?
            .filter(|l| l.created_at > Timestamp::ago(LOGIN_TTL))
            .ok_or(OidcError::BadState)?;
        if let Some(error) = callback.error {
            return Err(OidcError::Refused(printable(error)));
        }
        let code = callback
            .code
            .ok_or_else(|| OidcError::Provider("no authorization code".to_owned()))?;
        let client = self.client(self.metadata().await?, &login.redirect_uri)?;
        let http = self.http.clone();
        let tokens = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| OidcError::Provider(format!("no token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(login.pkce_verifier))
            .request_async(&move |request| send(http.clone(), request))
            .await
            .map_err(|e| OidcError::Provider(format!("token request: {}", error_chain(&e))))?;
        let id_token = tokens
            .id_token()
            .ok_or_else(|| OidcError::InvalidIdToken("the token response has none".to_owned()))?;
        let claims = match id_token.claims(&client.id_token_verifier(), &Nonce::new(login.nonce)) {
            Ok(claims) => claims,
            Err(e) => {
                if matches!(
                    e,
                    ClaimsVerificationError::SignatureVerification(
                        SignatureVerificationError::NoMatchingKey
                    )
                ) {
                    // Perhaps the provider rotated its keys: fetch them again next time.
                    *self.metadata.lock().await = None;
                }
                return Err(OidcError::InvalidIdToken(error_chain(&e)));
            }
        };
        let admin = self.settings.admin_claim.as_ref().map(|claim| {
            claim_has(
                claims.additional_claims().0.get(claim),
                &self.settings.admin_value,
            )
        });
        let identity = ExternalIdentity {
            subject: claims.subject().as_str().to_owned(),
            username: claims
                .preferred_username()
                .map(|u| u.as_str().to_owned())
                .or_else(|| claims.email().map(|e| e.as_str().to_owned())),
            display_name: claims
                .name()
                .and_then(|n| n.get(None))
                .map(|n| n.as_str().to_owned()),
            admin,
        };
        Ok((identity, login.return_to))
    }

    /// Deletes the logins older than [`LOGIN_TTL`]; how many.
    pub async fn delete_stale_logins(&self) -> Result<u64, StoreError> {
        self.logins.delete_older(&Timestamp::ago(LOGIN_TTL)).await
    }
}

/// Whether a claim is `value`, or a list holding it.
fn claim_has(claim: Option<&serde_json::Value>, value: &str) -> bool {
    match claim {
        Some(serde_json::Value::String(s)) => s == value,
        Some(serde_json::Value::Array(items)) => items.iter().any(|v| v.as_str() == Some(value)),
        Some(serde_json::Value::Bool(b)) => *b && value == "true",
        _ => false,
    }
}

/// A provider's error code as it may be shown and logged: short, printable.
fn printable(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(80)
        .collect()
}

/// An error and its sources, on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// A path of ours to return to after signing in; anything else is `/`.
pub fn safe_return_path(next: Option<&str>) -> String {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && path.len() <= 512
                && !path.contains('\\')
                && path.chars().all(|c| c.is_ascii_graphic()) =>
        {
            path.to_owned()
        }
        _ => "/".to_owned(),
    }
}

impl Authenticator {
    /// The single sign-on provider, when configured.
    pub fn single_sign_on(&self) -> Option<&SingleSignOn> {
        self.oidc.as_ref()
    }

    /// Signs in the person the provider vouched for: their account by
    /// subject, or a new clinician (when allowed); the admin claim, when
    /// configured, sets the role.
    pub async fn sign_in_external(
        &self,
        identity: &ExternalIdentity,
    ) -> Result<(SignedIn, AccountChange), OidcError> {
        let oidc = self.oidc.as_ref().ok_or(OidcError::NotConfigured)?;
        let (mut user, mut change) = match self.users.by_subject(&identity.subject).await? {
            Some(user) => (user, AccountChange::None),
            None if oidc.settings.auto_create => (
                self.create_external(identity).await?,
                AccountChange::Created,
            ),
            None => return Err(OidcError::UnknownUser),
        };
        if user.disabled_at.is_some() {
            return Err(OidcError::Disabled);
        }
        let role = identity
            .admin
            .map(|admin| if admin { Role::Admin } else { Role::Clinician });
        if let Some(role) = role.filter(|r| *r != user.role) {
            self.users.set_role(&user.id, role).await?;
            user.role = role;
            if change == AccountChange::None {
                change = AccountChange::RoleChanged(role);
            }
        }
        let signed_in = self.start_session(user).await.map_err(|e| match e {
            super::AuthError::Store(e) => OidcError::Store(e),
            other => OidcError::Provider(other.to_string()),
        })?;
        Ok((signed_in, change))
    }

    async fn create_external(&self, identity: &ExternalIdentity) -> Result<User, OidcError> {
        let id = [
            identity.username.as_deref(),
            Some(identity.subject.as_str()),
        ]
        .into_iter()
        .flatten()
        .find(|id| model::check_new_user(id, "-").is_ok())
        .ok_or(OidcError::NoUsableId)?;
        let display_name = identity
            .display_name
            .as_deref()
            .filter(|n| model::check_new_user(id, n).is_ok())
            .unwrap_or(id);
        let role = if identity.admin == Some(true) {
            Role::Admin
        } else {
            Role::Clinician
        };
        let new = NewUser {
            id,
            display_name: display_name.trim(),
            role,
            password_hash: None,
            oidc_subject: Some(&identity.subject),
        };
        match self.users.insert(new).await {
            Ok(()) => {}
            // A first sign-in of the same person at the same moment elsewhere.
            Err(StoreError::Duplicate(_)) => {
                return match self.users.by_subject(&identity.subject).await? {
                    Some(user) => Ok(user),
                    None => Err(OidcError::IdTaken(id.to_owned())),
                };
            }
            Err(e) => return Err(e.into()),
        }
        self.users
            .by_subject(&identity.subject)
            .await?
            .ok_or(OidcError::UnknownUser)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_own_paths_are_returned_to() {
        assert_eq!(safe_return_path(Some("/queue")), "/queue");
        assert_eq!(safe_return_path(Some("/record/p-1?x=1")), "/record/p-1?x=1");
        for bad in [
            "//evil.example",
            "https://evil.example/",
            "/\\evil",
            "queue",
            "/a b",
            "",
        ] {
            assert_eq!(safe_return_path(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(safe_return_path(None), "/");
    }

    #[test]
    fn an_admin_claim_is_a_value_or_a_list_holding_it() {
        let list = serde_json::json!(["clinician", "admin"]);
        assert!(claim_has(Some(&list), "admin"));
        assert!(!claim_has(Some(&list), "root"));
        assert!(claim_has(Some(&serde_json::json!("admin")), "admin"));
        assert!(!claim_has(
            Some(&serde_json::json!("administrator")),
            "admin"
        ));
        assert!(claim_has(Some(&serde_json::json!(true)), "true"));
        assert!(!claim_has(None, "admin"));
    }
}
