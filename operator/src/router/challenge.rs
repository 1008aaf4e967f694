//! HTTP-01 answers on the plain HTTP port. The operator publishes each pending challenge as one
//! key of a ConfigMap (`token` -> key authorization); every router replica watches that
//! ConfigMap and answers `/.well-known/acme-challenge/{token}` from its cache.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::reflector::{ObjectRef, Store};

#[derive(Clone)]
pub struct Challenges {
    store: Store<ConfigMap>,
    namespace: String,
    name: String,
}

impl Challenges {
    pub fn new(store: Store<ConfigMap>, namespace: &str, name: &str) -> Self {
        Self {
            store,
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key authorization published for `token`, if any.
    pub fn key_authorization(&self, token: &str) -> Option<String> {
        let config_map = self
            .store
            .get(&ObjectRef::new(&self.name).within(&self.namespace))?;
        config_map.data.as_ref()?.get(token).cloned()
    }
}

async fn answer(State(challenges): State<Challenges>, Path(token): Path<String>) -> Response {
    match challenges.key_authorization(&token) {
        Some(key_authorization) => {
            tracing::info!(%token, "answered HTTP-01 challenge");
            (
                [(header::CONTENT_TYPE, "application/octet-stream")],
                key_authorization,
            )
                .into_response()
        }
        None => (StatusCode::NOT_FOUND, "unknown challenge").into_response(),
    }
}

/// The plain-HTTP app: challenge answers only.
pub fn app(challenges: Challenges) -> Router {
    Router::new()
        .route("/.well-known/acme-challenge/{token}", get(answer))
        .with_state(challenges)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use kube::runtime::{reflector, watcher};
    use tower::ServiceExt;

    #[tokio::test]
    async fn answers_published_tokens_only() {
        let (store, mut writer) = reflector::store::<ConfigMap>();
        let mut config_map = ConfigMap::default();
        config_map.metadata.name = Some("acme".into());
        config_map.metadata.namespace = Some("ops".into());
        config_map.data = Some([("tok123".to_owned(), "tok123.thumb".to_owned())].into());
        writer.apply_watcher_event(&watcher::Event::Apply(config_map));
        let app = app(Challenges::new(store, "ops", "acme"));

        let request = |path: &str| Request::get(path).body(Body::empty()).unwrap_or_default();
        let Ok(found) = app
            .clone()
            .oneshot(request("/.well-known/acme-challenge/tok123"))
            .await;
        assert_eq!(found.status(), StatusCode::OK);
        let body = found
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        assert_eq!(&body[..], b"tok123.thumb");
        let Ok(missing) = app
            .clone()
            .oneshot(request("/.well-known/acme-challenge/other"))
            .await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        let Ok(elsewhere) = app.oneshot(request("/v1/sessions/a/b")).await;
        assert_eq!(elsewhere.status(), StatusCode::NOT_FOUND);
    }
}
