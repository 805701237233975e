"""The Broker: the one object HTTP handlers, the CLI and tests call, a facade over services.

Each capability is a service module that calls the authority kernel (``core.kernel``)
through its public interface: registration, renewal (and resume), delegating, revoking,
apps, tokencheck (validate, authenticate, introspect), liveness, handshake, discovery;
signing holds the current keys, freshness the revocation index's currency. Every method
here hands its call to one of them. None of them writes audit events or touches storage
other than through the kernel: an operation either completes with its state change and
audit event durable together, or raises a :class:`~tasklease.core.errors.TaskleaseError`
(after auditing the denial, where there is a caller to attribute it to).

The facade is in two modules: ``core.brokerbase`` builds the services and holds what
agents, apps and resource servers call; :class:`Broker` here adds what operators call
(tenants, apps and launch tokens, issuance policy, operators, signing keys).
"""

from __future__ import annotations

from typing import Any

from tasklease.core.adminsecret import AdminSecret
from tasklease.core.apps import expires_at_text
from tasklease.core.audit import Deferred, deferring
from tasklease.core.auditformat import AuditEntry, clipped
from tasklease.core.brokerbase import FEED_SCOPE, BrokerBase, SignIn
from tasklease.core.kernel import IssuedToken, RequestContext
from tasklease.core.operators import INIT
from tasklease.core.pending import Pending
from tasklease.core.policy import PolicyEngine, PolicySource, Reloaded
from tasklease.core.records import AppRecord, LaunchTokenRecord, OperatorRecord, TenantRecord
from tasklease.core.registration import PendingRegistration
from tasklease.core.status import VERSION
from tasklease.core.tokencheck import ALL_KINDS
from tasklease.core.tokens import Claims
from tasklease.core.transparency import RollbackAccepted

__all__ = [
    "ALL_KINDS",
    "FEED_SCOPE",
    "VERSION",
    "Broker",
    "Deferred",
    "IssuedToken",
    "Pending",
    "PendingRegistration",
    "RequestContext",
    "SignIn",
    "deferring",
    "expires_at_text",
]


class Broker(BrokerBase):
    """The credential broker's operations. Thread-safe; share one per process.

    ``keyring`` and ``validator`` are always the current ones (key rotation replaces
    them); ``config``, ``store``, ``clock``, ``metrics``, ``revocations``, ``audit``,
    ``kernel``, ``nonces``, ``dpop`` and ``federation`` (the federated trust domains,
    :class:`~tasklease.core.federation.Federation`) are fixed for the broker's life.
    """

    # --- tenants (core.tenants; served by the default tenant's broker) ---------------------

    @property
    def tenant(self) -> str:
        """The tenant this broker serves."""
        return self.store.tenant

    def create_tenant(
        self, claims: Claims, *, name: object, trust_domain: object, ctx: RequestContext
    ) -> TenantRecord:
        """Record a tenant (:meth:`Tenants.create`); ``tasklease.tenancy`` sets it up."""
        return self._tenants.create(claims, name=name, trust_domain=trust_domain, ctx=ctx)

    def refuse_complete_tenant(
        self, claims: Claims, record: TenantRecord, ctx: RequestContext
    ) -> None:
        """Refuse (audited Conflict) to finish a tenant created to the end
        (:meth:`Tenants.refuse_complete`)."""
        self._tenants.refuse_complete(claims, record, ctx)

    def list_tenants(self) -> list[TenantRecord]:
        return self._tenants.list_tenants()

    def get_tenant(self, name: str) -> TenantRecord | None:
        """The active tenant ``name``, or None."""
        return self._tenants.get(name)

    def remove_tenant(self, claims: Claims, name: object, ctx: RequestContext) -> TenantRecord:
        """Mark a tenant removed (:meth:`Tenants.remove`)."""
        return self._tenants.remove(claims, name, ctx)

    def set_up_tenant_admin(self, by: str, ctx: RequestContext) -> tuple[OperatorRecord, str]:
        """This (new) tenant's first operator, ``admin``, and its secret (shown once)."""
        return self._operators.add_first_admin(by, ctx)

    # --- admin, apps and launch tokens (core.apps) ---------------------------------------

    def admin_auth(self, secret: object, ctx: RequestContext) -> IssuedToken:
        """An admin token for the admin secret."""
        return self._apps.admin_auth(secret, ctx)

    def register_app(
        self,
        claims: Claims,
        *,
        name: object,
        scopes: object,
        token_ttl: object,
        ctx: RequestContext,
        public_key: object = None,
        authorization_details: object = None,
    ) -> tuple[AppRecord, str]:
        """Create an app; returns the record and its client secret (shown once)."""
        return self._apps.register_app(
            claims,
            name=name,
            scopes=scopes,
            token_ttl=token_ttl,
            ctx=ctx,
            public_key=public_key,
            authorization_details=authorization_details,
        )

    def list_apps(self) -> list[AppRecord]:
        return self._apps.list_apps()

    def get_app(self, app_id: str) -> AppRecord:
        """The app ``app_id``; raises NotFound."""
        return self._apps.get_app(app_id)

    def update_app(
        self,
        claims: Claims,
        app_id: str,
        *,
        scopes: object,
        token_ttl: object,
        ctx: RequestContext,
        public_key: object = None,
        authorization_details: object = None,
    ) -> AppRecord:
        """Change an app's ceiling (scopes, grants), token TTL and/or public key,
        atomically."""
        return self._apps.update_app(
            claims,
            app_id,
            scopes=scopes,
            token_ttl=token_ttl,
            ctx=ctx,
            public_key=public_key,
            authorization_details=authorization_details,
        )

    def rotate_app_secret(
        self, claims: Claims, app_id: str, ctx: RequestContext
    ) -> tuple[AppRecord, str]:
        """Replace an app's client secret (returned, shown once); its app tokens and
        launch tokens end, its agents keep theirs."""
        return self._apps.rotate_secret(claims, app_id, ctx)

    def deregister_app(self, claims: Claims, app_id: str, ctx: RequestContext) -> AppRecord:
        """Deactivate an app: its secret stops working and its live app tokens are revoked."""
        return self._apps.deregister_app(claims, app_id, ctx)

    def app_auth(
        self,
        client_id: object,
        client_secret: object,
        ctx: RequestContext,
        *,
        bind: bool = False,
        scope: object = None,
        resource: object = None,
    ) -> IssuedToken:
        """An app token for an app's client credentials (DPoP-bound when ``bind`` and the
        request carries a proof); a token request's ``scope`` and ``resource`` beyond an
        app token's are refused once the app authenticates, with a ``denial_id``."""
        return self._apps.app_auth(
            client_id, client_secret, ctx, bind=bind, scope=scope, resource=resource
        )

    def app_auth_assertion(
        self,
        assertion: str,
        ctx: RequestContext,
        *,
        client_id: str | None,
        audiences: tuple[str, ...],
        bind: bool = False,
        scope: object = None,
        resource: object = None,
    ) -> IssuedToken:
        """An app token for an app's signed client assertion (``private_key_jwt``)."""
        return self._apps.app_auth_assertion(
            assertion,
            ctx,
            client_id=client_id,
            audiences=audiences,
            bind=bind,
            scope=scope,
            resource=resource,
        )

    def create_launch_token(self, claims: Claims, **request: Any) -> tuple[str, LaunchTokenRecord]:
        """Mint a launch token (``core.apps.Apps.prepare_launch_token`` names the fields).
        App callers are held to their app's scope ceiling; a multi-use one admits
        ``max_uses`` registrations."""
        return self._apps.create_launch_token(claims, **request)

    def prepare_launch_token(
        self, claims: Claims, **request: Any
    ) -> Pending[tuple[str, LaunchTokenRecord]]:
        """:meth:`create_launch_token` decided, not written; :meth:`answer` commits it."""
        return self._apps.prepare_launch_token(claims, **request)

    # --- grants and issuance policy (core.granttypes, core.calls, core.policy) ---------

    @property
    def policy(self) -> PolicyEngine:
        """The tenant's issuance policy in force (Cedar; ``core.policy``)."""
        return self.kernel.policy

    @property
    def policy_source(self) -> PolicySource | None:
        """Where the tenant's policies are read from (None: the default policy)."""
        return self.kernel.policy.source

    def use_policy_source(self, source: PolicySource) -> None:
        """Follow ``source`` for the tenant's policies (an adapter's), loading it now.

        Raises:
            Unavailable: the load could not be audited; no set is in force (every
                decision denies) until :meth:`reload_policies` loads it.
        """
        self.kernel.policy.use_source(source, self._audit_policy_load)

    def started_with_admin_secret(self, secret: str | None = None) -> bool:
        """Record the configured admin secret as the one this broker starts with; when
        another was on record, end the admin's tokens and launch tokens made with it and
        return True (``core.adminsecret``). ``secret``: its plain text, when the
        environment gave it.

        Raises:
            Unavailable: the record could not be written; nothing changed.
        """
        return AdminSecret(self.kernel).started_with(secret)

    def reload_policies(self) -> bool:
        """Reload the tenant's policies if their source changed; audit what happened.

        True when a new set is in force. A set that fails to load is refused whole and the
        one in force stays (audited as ``policy_load_failed``). A set is in force only once
        its ``policy_loaded`` event is durable.

        Raises:
            Unavailable: the event could not be stored; nothing changed, and the next
                reload tries again.
        """
        outcome = self.kernel.policy.reload(self._audit_policy_load)
        return outcome is not None and outcome.policies is not None

    def _audit_policy_load(self, outcome: Reloaded) -> None:
        """Record ``outcome`` before it takes effect (``PolicyEngine.reload``)."""
        if outcome.policies is not None:
            loaded = outcome.policies
            self.kernel.record(
                AuditEntry(
                    "policy_loaded",
                    detail=f"policy set {loaded.digest[:12]} from {clipped(loaded.origin, 256)} "
                    f"policies=[{clipped(','.join(loaded.ids), 1200)}]",
                )
            )
            return
        self.kernel.record(
            AuditEntry(
                "policy_load_failed",
                outcome="denied",
                detail=f"policies refused, the set in force stays "
                f"{self.kernel.policy.current.digest[:12]}: {clipped(str(outcome.error), 1500)}",
            )
        )

    # --- operators (core.operators) ----------------------------------------------------

    def operator_auth(
        self,
        *,
        name: object,
        secret: object,
        nonce: object,
        signature: object,
        ctx: RequestContext,
    ) -> tuple[IssuedToken, OperatorRecord]:
        """An operator token for a named operator's secret or key (:class:`Operators`)."""
        return self._operators.authenticate(
            name=name, secret=secret, nonce=nonce, signature=signature, ctx=ctx
        )

    def add_operator(
        self,
        claims: Claims,
        *,
        name: object,
        role: object,
        public_key: object,
        ctx: RequestContext,
    ) -> tuple[OperatorRecord, str]:
        """Create an operator; returns it and its secret, shown once ("" for a key)."""
        return self._operators.add(claims, name=name, role=role, public_key=public_key, ctx=ctx)

    def list_operators(self) -> list[OperatorRecord]:
        """Every operator, removed ones too, by name."""
        return self._operators.list_operators()

    def remove_operator(self, claims: Claims, name: object, ctx: RequestContext) -> OperatorRecord:
        """Remove an operator: its credential stops working and its live tokens end."""
        return self._operators.remove(claims, name, ctx)

    def rotate_operator(
        self, claims: Claims, name: object, *, public_key: object, ctx: RequestContext
    ) -> tuple[OperatorRecord, str]:
        """Replace an operator's credential (a new secret, or ``public_key``); its tokens end."""
        return self._operators.rotate(claims, name, public_key=public_key, ctx=ctx)

    def set_up_first_admin(self, name: object, ctx: RequestContext) -> tuple[OperatorRecord, str]:
        """The admin operator ``tasklease init`` makes (or re-keys) on its own database."""
        return self._operators.set_up_first_admin(name, ctx)

    def record_keys_made(
        self, ctx: RequestContext, *, signing_key: bool, log_key: bool, by: str = INIT
    ) -> None:
        """Audit the keys made for this broker, as done by ``by``: ``tasklease init`` for
        the default tenant, the operator who created it for a tenant. Its first signing
        key (``signing_key_created``, with its kid) and the audit log's key
        (``audit_log_key_created``, with its vkey). Every later key is a rotation,
        audited before it takes effect; serving makes none.
        """
        entries = [
            *([self._keys.created(by, ctx)] if signing_key else []),
            *([self.transparency.created(by, ctx)] if log_key else []),
        ]
        if entries:
            self.kernel.record(*entries)

    # --- signing keys (core.signing) ---------------------------------------------------

    def rotate_signing_key(self, claims: Claims, ctx: RequestContext) -> tuple[str, str]:
        """Make a new signing key active; returns ``(new_kid, previous_kid)``.

        The trust bundle is published anew with the next ``spiffe_sequence``; should that
        fail, :meth:`publish_trust_bundle` does it on its next run.
        """
        rotated = self._keys.rotate(claims, ctx)
        self._trust_bundles.republish()
        return rotated

    def retire_signing_key(self, claims: Claims, kid: str, ctx: RequestContext) -> tuple[str, ...]:
        """Stop trusting the older signing key ``kid`` at once (``core.signing``); returns
        the kids still trusted. The trust bundle is published anew without it.

        Raises:
            NotFound: no such key (audited).
            Conflict: ``kid`` is the active key (audited): rotate first.
            Unavailable: the audit event could not be stored; nothing changed.
        """
        kept = self._keys.retire(claims, kid, ctx)
        self._trust_bundles.republish()
        return kept

    def accept_restore(self, by: str, ctx: RequestContext) -> RollbackAccepted | None:
        """Accept that this tenant's database went back in time (a restore, lost commits;
        ``core.rollback``), None when it did not.

        Records it in the audit log (``audit_rollback_accepted``, naming both trees), has a
        new log key sign from here, keeps a checkpoint of the log as it is now as the
        anchor, and publishes the trust bundle again with a new ``spiffe_sequence``
        (federated peers may hold a later one than the restored database's).

        Raises:
            Unavailable: the event could not be stored; nothing changed.
            ValueError, OSError: the anchor is unreadable or could not be written.
        """
        found = self.transparency.examine().went_back
        if found is None:
            return None
        accepted = self.transparency.accept_rollback(found, by=by, ctx=ctx)
        self._trust_bundles.publish(force=True)
        return accepted

    def refresh_keys(self) -> bool:
        """Adopt signing keys another process sharing the key directory added or retired."""
        return self._keys.refresh()

    def publish_trust_bundle(self) -> bool:
        """Publish the trust bundle when this process's key set is not the one it last
        published (start-up, rotation, keys added or retired elsewhere); cheap otherwise.
        Run every second beside :meth:`refresh_keys` (:mod:`tasklease.core.trustbundle`)."""
        return self._trust_bundles.publish_if_changed()

    def trust_bundle(self) -> bytes:
        """This broker's SPIFFE trust bundle, as served at ``/v1/federation/bundle``."""
        return self._trust_bundles.served()
