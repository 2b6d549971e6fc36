//! `/api/v1/invoices*`: students see the invoices they pay, tutors those for
//! the lessons they teach (read only), admins and auditors all; an admin
//! may void an unpaid one or mark an open one uncollectible.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use lectern_domain::billing::invoice::{InvoiceCommand, InvoiceStatus};
use lectern_domain::identity::Role;
use lectern_domain::policy::Action;
use lectern_projections::billing::{self as read, InvoiceRow, LineRow, Scope};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::accepted::CommandAccepted;
use crate::app::AppState;
use crate::auth::Caller;
use crate::extract::{ApiJson, ApiQuery};
use crate::pagination::{Consistency, CursorPage, CursorParams};
use crate::problem::{Code, Problem};

/// The invoice routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_invoices))
        .routes(routes!(get_invoice))
        .routes(routes!(void_invoice))
        .routes(routes!(mark_uncollectible))
        .routes(routes!(start_payment))
}

/// Whose invoices `caller` sees.
fn scope(caller: &Caller, own_only: bool) -> Scope {
    match caller.role {
        _ if !own_only => Scope::All,
        Role::Tutor => Scope::Tutor(caller.user_id),
        _ => Scope::Payer(caller.user_id),
    }
}

/// Invoices the caller may see, newest first, cursor-paged.
#[utoipa::path(get, path = "/api/v1/invoices", tag = "billing", security(("bearer" = [])),
    params(CursorParams, Consistency),
    responses((status = 200, body = CursorPage<InvoiceRow>), (status = 400, body = Problem),
              (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 422, body = Problem), (status = 429, body = Problem)))]
async fn list_invoices(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(cursor): ApiQuery<CursorParams>,
    ApiQuery(consistency): ApiQuery<Consistency>,
) -> Result<Json<CursorPage<InvoiceRow>>, Problem> {
    let grant = caller.authorize(&state, Action::PaymentRead).await?;
    let keyset = cursor.keyset::<(DateTime<Utc>, Uuid)>()?;
    consistency.wait(&state, "billing").await?;
    let rows = read::page(
        &state.read_pool,
        scope(&caller, grant.own_only),
        keyset.after,
        i64::from(keyset.fetch()),
    )
    .await?;
    Ok(Json(keyset.page(rows, |i| (i.created_at, i.id))))
}

/// An invoice with its lines.
#[derive(Serialize, ToSchema)]
pub struct InvoiceDetail {
    /// The invoice.
    #[serde(flatten)]
    invoice: InvoiceRow,
    /// What it sells.
    lines: Vec<LineRow>,
}

/// One invoice the caller may see.
#[utoipa::path(get, path = "/api/v1/invoices/{id}", tag = "billing", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Invoice id"), Consistency),
    responses((status = 200, body = InvoiceDetail), (status = 400, body = Problem),
              (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 429, body = Problem)))]
async fn get_invoice(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    ApiQuery(consistency): ApiQuery<Consistency>,
) -> Result<Json<InvoiceDetail>, Problem> {
    let grant = caller.authorize(&state, Action::PaymentRead).await?;
    consistency.wait(&state, "billing").await?;
    read::one(&state.read_pool, scope(&caller, grant.own_only), id)
        .await?
        .map(|(invoice, lines)| Json(InvoiceDetail { invoice, lines }))
        .ok_or_else(|| Problem::new(Code::INVOICE_NOT_FOUND, "No such invoice."))
}

/// Why an invoice is closed unpaid.
#[derive(Deserialize, ToSchema)]
pub struct CloseInvoice {
    /// Shown in the audit log; at most 500 characters.
    #[serde(default)]
    reason: Option<String>,
}

/// Void an unpaid invoice (admins only): nothing is owed any more. A paid
/// invoice is refunded instead.
#[utoipa::path(post, path = "/api/v1/invoices/{id}/void", tag = "billing", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Invoice id")), request_body = CloseInvoice,
    responses((status = 200, body = CommandAccepted), (status = 400, body = Problem),
              (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 409, description = "The invoice is paid", body = Problem),
              (status = 422, body = Problem), (status = 429, body = Problem)))]
async fn void_invoice(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    ApiJson(body): ApiJson<CloseInvoice>,
) -> Result<Json<CommandAccepted>, Problem> {
    close(&state, &caller, id, body, Action::InvoiceVoid, |reason| {
        InvoiceCommand::Void { reason }
    })
    .await
}

/// Mark an open invoice uncollectible (admins only): still owed, no longer
/// chased (no overdue record, no new payment starts). A payment that still
/// arrives pays it, as at Stripe.
#[utoipa::path(post, path = "/api/v1/invoices/{id}/uncollectible", tag = "billing", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Invoice id")), request_body = CloseInvoice,
    responses((status = 200, body = CommandAccepted), (status = 400, body = Problem),
              (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 409, description = "The invoice is not open", body = Problem),
              (status = 422, body = Problem), (status = 429, body = Problem)))]
async fn mark_uncollectible(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    ApiJson(body): ApiJson<CloseInvoice>,
) -> Result<Json<CommandAccepted>, Problem> {
    close(
        &state,
        &caller,
        id,
        body,
        Action::InvoiceUncollectible,
        |reason| InvoiceCommand::MarkUncollectible { reason },
    )
    .await
}

/// Close invoice `id` unpaid with `command`, as `action` allows.
async fn close(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    body: CloseInvoice,
    action: Action,
    command: impl FnOnce(String) -> InvoiceCommand,
) -> Result<Json<CommandAccepted>, Problem> {
    caller.authorize(state, action).await?;
    let reason = body.reason.unwrap_or_default();
    if reason.chars().count() > 500 {
        return Err(Problem::invalid(
            "#/reason",
            "must be at most 500 characters",
        ));
    }
    let committed = state
        .billing
        .execute(id, command(reason), &caller.metadata())
        .await?;
    Ok(Json(CommandAccepted::new(id, &committed)))
}

/// A payment started: confirm it on the client with Stripe.js and
/// `client_secret`. The invoice is paid when Stripe's webhook says so.
#[derive(Serialize, ToSchema)]
pub struct PaymentStarted {
    /// The invoice.
    invoice_id: Uuid,
    /// Stripe's PaymentIntent.
    payment_intent_id: String,
    /// What the client confirms the PaymentIntent with. Give it to nobody
    /// else.
    client_secret: String,
    /// What it asks for: the invoice's remaining amount, in minor units.
    amount: i64,
    /// Lowercase ISO 4217.
    currency: String,
}

/// Start paying an open invoice (its payer, or an admin): creates a Stripe
/// PaymentIntent for the amount remaining and answers its client secret.
/// Starting again before anything changed answers the same PaymentIntent.
/// At most 10 starts a minute per user.
#[utoipa::path(post, path = "/api/v1/invoices/{id}/payments", tag = "billing", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Invoice id")),
    responses((status = 201, body = PaymentStarted), (status = 400, body = Problem),
              (status = 401, body = Problem), (status = 403, description = "Not the invoice's payer", body = Problem),
              (status = 404, body = Problem),
              (status = 409, description = "The invoice is void, paid or has nothing remaining", body = Problem),
              (status = 429, body = Problem),
              (status = 502, description = "Stripe could not be reached or refused", body = Problem),
              (status = 503, description = "No Stripe secret key is configured", body = Problem)))]
async fn start_payment(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<(StatusCode, Json<PaymentStarted>), Problem> {
    let grant = caller.authorize(&state, Action::PaymentCreate).await?;
    let invoice = state.billing.invoice(id).await?;
    let payer = invoice.payer_id.unwrap_or_default();
    if grant.own_only && payer != caller.user_id {
        return Err(caller
            .deny(
                &state,
                Action::PaymentCreate,
                Code::FORBIDDEN,
                "Only the invoice's payer may pay it.",
            )
            .await);
    }
    let status = invoice.status.unwrap_or(InvoiceStatus::Draft);
    if status != InvoiceStatus::Open || invoice.amount_remaining() == 0 {
        return Err(Problem::new(
            Code::INVOICE_NOT_PAYABLE,
            format!(
                "The invoice is {} with {} remaining: there is nothing to pay.",
                status.as_str(),
                invoice.amount_remaining()
            ),
        ));
    }
    let Some(stripe) = &state.stripe else {
        return Err(Problem::new(
            Code::PAYMENTS_NOT_CONFIGURED,
            "Payments are not configured on this server (LECTERN_STRIPE_SECRET_KEY).",
        ));
    };
    let currency = invoice
        .currency
        .as_ref()
        .map(|c| c.as_str().to_owned())
        .unwrap_or_default();
    let amount = invoice.amount_remaining();
    // Until money moves, a start asks for the same PaymentIntent (Stripe
    // keeps an idempotency key for 24 hours).
    let key = format!(
        "lectern-invoice-{id}-due{}-paid{}",
        invoice.amount_due,
        invoice.amount_paid()
    );
    let intent = stripe
        .create_payment_intent(amount, &currency, id, payer, &key)
        .await
        .map_err(|e| {
            tracing::warn!(invoice = %id, error = %e, "a PaymentIntent could not be created");
            Problem::new(
                Code::PAYMENT_PROVIDER_ERROR,
                "Stripe could not start the payment; try again.",
            )
        })?;
    state
        .billing
        .execute(
            id,
            InvoiceCommand::StartPayment {
                payment_intent_id: intent.id.clone(),
                amount,
            },
            &caller.metadata(),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(PaymentStarted {
            invoice_id: id,
            payment_intent_id: intent.id,
            client_secret: intent.client_secret,
            amount: intent.amount,
            currency: intent.currency,
        }),
    ))
}
