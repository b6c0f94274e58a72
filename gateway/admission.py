"""What a submission makes, and what a forwarded case must be (DESIGN §4a). No I/O.

The origin gateway builds a new case from its partner's SubmitCase; every later gateway
rebuilds the case a peer forwards from the origin's own signed request, with the same
function and its own catalogue, routes and alliances, and refuses the case where it
says anything else. So what each hop stores is what the origin said, and a case outside
its scope is refused at every hop, not only where it entered.
"""

from __future__ import annotations

from gateway import evidence
from gateway.certificates.citations import check_citations
from gateway.certificates.directory import directory_of
from gateway.config import Config
from gateway.divisions import resolve
from gateway.errors import NotFound, PermissionDenied, quote
from gateway.ids import CASE_ID
from gateway.lifecycle import seconds, timestamp
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.pb.tongban.v1 import gateway_pb2 as gw
from gateway.routing import Route, RouteTable, Scope, admit
from gateway.signing import PublicKey
from gateway.validation import MODE_NAMES, check_delivery, check_submit

SCOPES = {Scope.INTRA_PROVINCE: pb.SCOPE_INTRA_PROVINCE,
          Scope.CROSS_PROVINCE: pb.SCOPE_CROSS_PROVINCE,
          Scope.METRO_CIRCLE: pb.SCOPE_METRO_CIRCLE}


class Admission:
    def __init__(self, config: Config, routes: RouteTable,
                 statements: evidence.Statements) -> None:
        self.config, self.routes, self.statements = config, routes, statements
        self.directory = directory_of(config)
        self._keys = {p.id: p.keys for p in config.partners.values()}

    def _keys_of(self, party: str) -> tuple[PublicKey, ...]:
        return self._keys.get(party, ())

    def build(self, origin: str, req: gw.SubmitCaseRequest, *, case_id: str, at: float,
                    origin_gateway: str, bundle_id: str, prefix: str
                    ) -> tuple[pb.Case, Route, str]:
        """The case a submission makes, its route from here and the division note. No I/O.

        The origin gateway builds a new case with it, and every later gateway rebuilds the
        forwarded case with it from the origin's own signed request, so what each hop
        stores is what the origin said, checked against this gateway's catalogue, routes
        and alliances (a case outside its scope is refused at every hop).
        """
        item = check_submit(req, dict(self.config.items), prefix)
        if req.HasField("delivery_preference"):
            check_delivery(req.delivery_preference, f"{prefix}delivery_preference")
        resolution = resolve(req.target_division)
        if resolution is None:
            raise NotFound(f"{req.target_division} is not a GB/T 2260 division code",
                           field=f"{prefix}target_division")
        route = self.routes.route(resolution.current, field=f"{prefix}target_division")
        admission = admit(origin[:6], resolution.current, item, self.config.alliances.values())
        check_citations(req.certificates, item, req.applicant, self.directory, self._keys_of,
                        at=at, prefix=prefix)
        case = pb.Case(
            case_id=case_id, case_number=req.case_number, origin_partner=origin,
            origin_gateway=origin_gateway, target_division=resolution.current,
            requested_division=req.target_division,
            target_partner=route.destination.partner or "",
            item_code=item.code, mode=MODE_NAMES[item.mode], scope=SCOPES[admission.scope],
            alliance=admission.alliance, applicant=req.applicant, form=req.form,
            materials=req.materials, state=pb.CASE_STATE_SUBMITTED,
            submitted_at=timestamp(at), updated_at=timestamp(at),
            deadline=timestamp(self.config.calendar.add(at, item.time_limit_days)),
            bundle_id=bundle_id, certificates=req.certificates)
        if req.HasField("delivery_preference"):
            case.delivery_preference.CopyFrom(req.delivery_preference)
        case.timeline.add(state=pb.CASE_STATE_SUBMITTED, at=timestamp(at), actor=origin,
                          update_id=f"submit:{case_id}")
        return case, route, resolution.note

    def rebuild(self, case: pb.Case, peer: str) -> tuple[pb.Case, Route]:
        """The forwarded case as its origin's statement makes it, and its route from here;
        refuse (PERMISSION_DENIED, nothing stored) where the case says anything else, or
        where `peer` could not have brought it on its way from its origin."""
        claims = self.statements.check(case.origin_statement, methods=evidence.SUBMISSIONS,
                                       field="case.origin_statement")
        origin = self.config.partners[claims.iss]  # the key was found: a listed partner
        if claims.iss != case.origin_partner:
            raise PermissionDenied(f"the case says it comes from {quote(case.origin_partner)}"
                                   f" but {claims.iss} signed it", field="case.origin_partner")
        if origin.gateway == self.config.self_id:
            raise PermissionDenied(f"{origin.id} submits its cases here, not through a peer",
                                   field="case.origin_partner")
        if case.origin_gateway != origin.gateway or claims.aud != origin.gateway:
            raise PermissionDenied(f"{origin.id} submits its cases at {origin.gateway}",
                                   field="case.origin_gateway")
        submitted = seconds(case.submitted_at)
        skew = self.config.limits.clock_skew_s
        if not claims.iat - skew <= submitted <= claims.exp + skew:
            raise PermissionDenied("the case was not admitted while its origin's token was "
                                   "valid", field="case.submitted_at")
        part = claims.mth == evidence.SUBMIT_BUNDLE
        if part != bool(case.bundle_id) or (part and not CASE_ID.fullmatch(case.bundle_id)):
            # the origin gateway names the bundle; what its origin signed says whether
            # the case is part of one
            raise PermissionDenied(f"{origin.id} signed {claims.mth.rsplit('/', 1)[-1]}: "
                                   "a bundle's part has its bundle's id, a single case none",
                                   field="case.bundle_id")
        submission = evidence.submission_of(claims.mth, case.origin_statement.request,
                                            case.case_number)
        expected, route, _ = self.build(
            origin.id, submission, case_id=case.case_id, at=submitted,
            origin_gateway=origin.gateway, bundle_id=case.bundle_id, prefix="case.")
        if not self.routes.on_path(origin.gateway, route.destination.gateway, peer):
            # a copy of a real statement, brought from off the path its case travels
            raise PermissionDenied(f"a case from {origin.gateway} to "
                                   f"{route.destination.gateway} does not come here from "
                                   f"{peer}", field="case.origin_gateway")
        expected.origin_statement.CopyFrom(case.origin_statement)
        differs = evidence.differing_field(expected, case, skip=evidence.HOP_CASE_FIELDS)
        if differs is not None:
            raise PermissionDenied(f"the case does not say what {origin.id} signed",
                                   field=f"case.{differs}")
        return expected, route
