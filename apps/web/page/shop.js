// The shop page: places an order with the Buy button and shows the answer as a person reads it.
// Plain script, no framework. Tracing comes from /static/tracing.js (window.shopTracing) when built.
'use strict';

const FIELDS = ['item', 'quantity', 'unit_price', 'customer_id', 'card_number'];
const config = JSON.parse(document.getElementById('shop-config').textContent);

function orderFromForm(form) {
  const value = (name) => document.getElementById(name).value.trim();
  // Numbers as numbers where they read as such; anything else is sent as typed, for the gateway to refuse.
  const asNumber = (text) => (text !== '' && Number.isFinite(Number(text)) ? Number(text) : text);
  return {
    item: value('item'),
    quantity: asNumber(value('quantity')),
    unit_price: asNumber(value('unit_price')),
    customer_id: value('customer_id'),
    card_number: value('card_number').replace(/[\s-]/g, ''),
  };
}

function clearMarks(form) {
  for (const name of FIELDS) {
    document.getElementById(name).removeAttribute('aria-invalid');
    document.getElementById(`${name}-error`).textContent = '';
  }
}

function markFields(form, fields) {
  for (const [name, message] of Object.entries(fields)) {
    if (!FIELDS.includes(name)) continue;
    document.getElementById(name).setAttribute('aria-invalid', 'true');
    document.getElementById(`${name}-error`).textContent = message;
  }
}

function describe(status, body) {
  if (status === 201) return { title: 'Order placed', failed: false };
  const message = body && body.error ? body.error.message : `The shop answered ${status}.`;
  return { title: message, failed: true };
}

function link(href, text) {
  const anchor = document.createElement('a');
  anchor.href = href;
  anchor.textContent = text;
  anchor.target = '_blank';
  anchor.rel = 'noopener';
  return anchor;
}

function showAnswer(status, body) {
  const section = document.getElementById('answer');
  const { title, failed } = describe(status, body);
  section.classList.toggle('failed', failed);
  document.getElementById('answer-title').textContent = title;
  const list = document.getElementById('answer-fields');
  list.replaceChildren();
  const rows = [['HTTP status', String(status)]];
  if (body) {
    if (body.order_id) rows.push(['Order', body.order_id]);
    if (body.status) rows.push(['Status', body.status]);
    if (body.total !== undefined) rows.push(['Total', Number(body.total).toFixed(2)]);
    if (body.trace_id) rows.push(['Trace', body.trace_id]);
  }
  for (const [name, value] of rows) {
    const term = document.createElement('dt');
    term.textContent = name;
    const detail = document.createElement('dd');
    detail.textContent = value;
    list.append(term, detail);
  }
  const trace = document.getElementById('answer-trace');
  trace.replaceChildren();
  if (body && body.trace_sampled === true) {
    trace.append(
      link(config.traceLink.replace('TRACEID', body.trace_id), 'Open this trace in Grafana'),
      ' · ',
      link(config.logsLink.replace('TRACEID', body.trace_id), 'its logs'),
    );
  } else if (body && body.trace_id) {
    trace.textContent = 'This trace was not kept: the gateway sampled it out, so Tempo will not have it.';
  }
  section.hidden = false;
}

async function buy(event) {
  event.preventDefault();
  const form = document.getElementById('order');
  const button = document.getElementById('buy');
  // Started in the click's context: "click to answer" ends once the answer is in the page.
  const answerSpan = window.shopTracing ? window.shopTracing.startClickToAnswer() : null;
  const fault = config.faults.find((candidate) => candidate.value === document.getElementById('fault').value);
  clearMarks(form);
  button.disabled = true;
  let status = 0;
  try {
    const response = await fetch('/api/order', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', ...(fault ? fault.headers : {}) },
      body: JSON.stringify(orderFromForm(form)),
    });
    status = response.status;
    const body = await response.json().catch(() => null);
    if (body && body.error && body.error.fields) markFields(form, body.error.fields);
    showAnswer(status, body);
  } catch (error) {
    showAnswer(0, { error: { message: `The shop could not be reached (${error.message}).` } });
  } finally {
    button.disabled = false;
    if (answerSpan) {
      if (status) answerSpan.setAttribute('http.response.status_code', status);
      answerSpan.end();
    }
  }
}

function addFaultOptions() {
  if (!config.faults.length) return;
  const select = document.getElementById('fault');
  for (const fault of config.faults) select.add(new Option(fault.label, fault.value));
  document.getElementById('fault-field').hidden = false;
}

addFaultOptions();
document.getElementById('buy').addEventListener('click', buy);
