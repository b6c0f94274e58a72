"""Electronic certificates (电子证照, issue #13, DESIGN §8): the pure rules. No I/O.

Foundation stones, wired into a certificate servicer by a later change:

- gateway/certificate_ids.py: identifiers after GB/T 36901 (check character, issuer code);
- documents.py: metadata after GB/T 36903, the issuer-signed *document* and the issuer's
  signed *status* answer (revocation), both checked offline with the issuer's JWKS;
- authorization.py: the holder's short-lived authorization and the purpose binding rule;
- claims.py: yes/no claims (valid on a day, name, a numeric fact, age) answered by the
  issuer as a short signed answer, never the whole document (data minimisation);
- tokens.py: what the four token kinds share (opening a JWS of one ``typ``);
- directory.py: finding the issuer (home division, directory, ListCertificates fan-out).

Each token kind has its own JWS ``typ``, distinct from the call tokens' ``tongban+jwt``,
so none can pass for another (docs/certificates.md).
"""
