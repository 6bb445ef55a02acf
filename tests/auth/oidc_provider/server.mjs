// A real OpenID provider for the hub's auth tests (node `oidc-provider`, pinned in package.json), run as a
// separate process by tests/auth/oidc.py. It issues client-credentials access tokens as signed JWTs
// (RS256 or ES256) for one resource (the hub's audience), with the roles and the facility of each client
// as claims. Configuration: one JSON file, the first argument:
//   {"port", "issuer", "audience", "ttl", "alg", "keys": [private JWKs with kid], "clients": [{"client_id",
//    "client_secret", "scope", "roles": [...], "facility": "..."}]}
// Prints "ready <port>" once listening.
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const cfg = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const allScopes = [...new Set(cfg.clients.flatMap((c) => c.scope.split(' ')))];

const provider = new Provider(cfg.issuer, {
  clients: cfg.clients.map((c) => ({
    client_id: c.client_id,
    client_secret: c.client_secret,
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    scope: c.scope,
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: cfg.alg,
    hub_roles: c.roles,
    hub_facility: c.facility ?? null,
  })),
  extraClientMetadata: { properties: ['hub_roles', 'hub_facility'] },
  jwks: { keys: cfg.keys },
  scopes: allScopes,
  ttl: { ClientCredentials: cfg.ttl },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => cfg.audience,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, resource) => {
        if (resource !== cfg.audience) throw new Error(`unknown resource ${resource}`);
        return {
          scope: allScopes.join(' '),
          audience: cfg.audience,
          accessTokenTTL: cfg.ttl,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: cfg.alg } },
        };
      },
    },
  },
  extraTokenClaims: async (ctx) => {
    const client = ctx.oidc.client;
    const claims = { roles: client.hub_roles };
    if (client.hub_facility) claims.facility = client.hub_facility;
    return claims;
  },
});
provider.proxy = false;

const server = provider.listen(cfg.port, '127.0.0.1', () => {
  console.log(`ready ${server.address().port}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
