// The shop page's browser tracing (docs/browser.md). Bundled by `make web` into dist/tracing.js, which the
// gateway serves at /static/tracing.js before the page's own script, so that zone.js wraps the Buy
// button's listener and the click's context reaches the fetch it makes.
//
// The gateway decides sampling, as it must for an untrusted caller: this page records every click, holds
// each trace's spans until the gateway's answer says whether it kept the trace (traceresponse) and at
// which threshold (tracestate ot=th), exports them only if it did, each with the gateway's ot entry,
// and drops a trace the gateway never answered for within HOLD_MS.
import { context, trace } from '@opentelemetry/api';
import { ZoneContextManager } from '@opentelemetry/context-zone';
import { TraceState } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { registerInstrumentations } from '@opentelemetry/instrumentation';
import { FetchInstrumentation } from '@opentelemetry/instrumentation-fetch';
import { UserInteractionInstrumentation } from '@opentelemetry/instrumentation-user-interaction';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BatchSpanProcessor, WebTracerProvider } from '@opentelemetry/sdk-trace-web';

const SERVICE_NAME = 'shop-web';
// Same origin: the gateway forwards it to the Collector's receiver for browser spans.
const TRACES_PATH = '/otlp/v1/traces';
export const HOLD_MS = 10_000;
const TRACE_RESPONSE = /^00-([0-9a-f]{32})-[0-9a-f]{16}-([0-9a-f]{2})$/;
// Only the clicks that place an order start a trace.
const TRACED_CLICK = '[data-traced-click]';

/** What the gateway answered about one trace: kept or not, and its ot entry ("th:…;rv:…"). */
function decisionFrom(response) {
  const match = TRACE_RESPONSE.exec(response.headers.get('traceresponse') ?? '');
  if (!match) return null;
  const kept = (parseInt(match[2], 16) & 1) === 1;
  const ot = new TraceState(response.headers.get('tracestate') ?? '').get('ot');
  // A kept trace without a threshold cannot be counted right by span metrics: treat it as not kept.
  return { traceId: match[1], kept: kept && /(^|;)th:[0-9a-f]{1,14}(;|$)/.test(ot ?? ''), ot };
}

/** A span as ended, seen with the gateway's tracestate instead of the one it started with. */
function withTraceState(span, ot) {
  const spanContext = { ...span.spanContext(), traceState: new TraceState().set('ot', ot) };
  return Object.create(span, { spanContext: { value: () => spanContext } });
}

/** Holds each trace's ended spans until the gateway decides; passes kept ones on to `next`. */
export class GatewayDecisionProcessor {
  constructor(next, holdMs = HOLD_MS) {
    this.next = next;
    this.holdMs = holdMs;
    this.pending = new Map(); // trace ID -> ended spans waiting for the decision
    this.decided = new Map(); // trace ID -> decision, for spans that end after it (kept HOLD_MS)
  }

  onStart() {}

  onEnd(span) {
    const traceId = span.spanContext().traceId;
    const decision = this.decided.get(traceId);
    if (decision) {
      this.forward(span, decision);
      return;
    }
    let held = this.pending.get(traceId);
    if (!held) {
      held = [];
      this.pending.set(traceId, held);
      // Outside the click's zone: a pending timer would keep the click span open.
      rootZone(() => setTimeout(() => this.pending.delete(traceId), this.holdMs));
    }
    held.push(span);
  }

  settle(decision) {
    if (this.decided.has(decision.traceId)) return;
    this.decided.set(decision.traceId, decision);
    rootZone(() => setTimeout(() => this.decided.delete(decision.traceId), this.holdMs));
    for (const span of this.pending.get(decision.traceId) ?? []) this.forward(span, decision);
    this.pending.delete(decision.traceId);
  }

  forward(span, decision) {
    if (decision.kept) rootZone(() => this.next.onEnd(withTraceState(span, decision.ot)));
  }

  forceFlush() {
    return this.next.forceFlush();
  }

  shutdown() {
    this.pending.clear();
    return this.next.shutdown();
  }
}

function rootZone(fn) {
  return globalThis.Zone ? globalThis.Zone.root.run(fn) : fn();
}

const exporter = new OTLPTraceExporter({ url: new URL(TRACES_PATH, window.location.href).href });
const decisions = new GatewayDecisionProcessor(new BatchSpanProcessor(exporter, { scheduledDelayMillis: 1000 }));
const provider = new WebTracerProvider({
  resource: resourceFromAttributes({ 'service.name': SERVICE_NAME, 'service.namespace': 'shop' }),
  spanProcessors: [decisions],
});
provider.register({ contextManager: new ZoneContextManager() });

registerInstrumentations({
  instrumentations: [
    new UserInteractionInstrumentation({
      eventNames: ['click'],
      shouldPreventSpanCreation: (_type, element) => !element.matches(TRACED_CLICK),
    }),
    new FetchInstrumentation({
      // Neither the page's assets nor the export of its own spans become spans.
      ignoreUrls: [/\/otlp\//, /\/static\//],
      ignoreNetworkEvents: true,
      applyCustomAttributesOnSpan: (_span, _request, result) => {
        const decision = result instanceof Response ? decisionFrom(result) : null;
        if (decision) decisions.settle(decision);
      },
    }),
  ],
});

const tracer = trace.getTracer('shop-web');

// The page's script (shop.js) calls this; without the bundle it finds no window.shopTracing and runs untraced.
window.shopTracing = {
  /** "click to answer": starts now, in the click's trace; the page ends it once the answer is shown. */
  startClickToAnswer() {
    return tracer.startSpan('click to answer', {}, context.active());
  },
  flush() {
    return provider.forceFlush();
  },
};
