// The toolbar popup: the state and latency of p2pcamera in the active tab, as its bridge.js
// passes them on (live while the popup is open), and a way to the settings.

import { normalize } from './settings.js';

const POPUP_PORT = 'p2pcamera-popup';
const field = (id) => document.getElementById(id);

/** What each state of the page's camera means to the user. */
const STATE_TEXT = {
  idle: 'No camera in use on this page yet.',
  connecting: 'Connecting to the GPU…',
  connected: 'Filtering your camera.',
  waiting: 'Waiting for a GPU; your camera is shown unfiltered.',
  reconnecting: 'Connection lost; your camera is shown unfiltered while reconnecting.',
  fallback: 'The filter is unavailable; this page gets your camera unfiltered.',
  stopped: 'Camera stopped.',
};

function showState(state, text) {
  field('state').dataset.state = state;
  field('state').textContent = text;
}

/** `ms` as the popup shows it: whole milliseconds from 10 on, one decimal below. */
function milliseconds(ms) {
  return `${ms >= 10 ? Math.round(ms) : Math.round(ms * 10) / 10} ms`;
}

/** Shows a status from bridge.js (null: the page has not used the camera yet). */
function showStatus(status) {
  const state = status?.state ?? 'idle';
  showState(state, STATE_TEXT[state]);
  const roundTrip = status?.round_trip_ms ?? null;
  const pod = status?.pod_ms ?? null;
  field('latency').hidden = state !== 'connected' || (roundTrip === null && pod === null);
  field('round-trip').textContent = roundTrip === null
    ? 'not measured in this page'
    : `${milliseconds(roundTrip)}, camera to screen (median of ${status.frames} frames)`;
  field('pod').textContent = pod === null ? '–' : milliseconds(pod);
}

async function start() {
  const { settings } = await chrome.storage.local.get('settings');
  const { enabled, endpoint } = normalize(settings);
  if (!enabled || !endpoint) {
    showState('off', 'The filter is switched off in the settings.');
    return;
  }
  const [tab] = await chrome.tabs.query({ active: true, currentWindow: true });
  if (!tab?.id) {
    showState('off', 'p2pcamera does not run on this page.');
    return;
  }
  const port = chrome.tabs.connect(tab.id, { name: POPUP_PORT, frameId: 0 });
  let answered = false;
  port.onMessage.addListener((status) => {
    answered = true;
    showStatus(status);
  });
  // No bridge.js in the tab (a site the extension does not run on): the port closes at once,
  // with an error. Later, the page went away (closed, reloaded, another site).
  port.onDisconnect.addListener(() => {
    const refused = chrome.runtime.lastError !== undefined;
    showState('off', answered && !refused ? 'The page has gone; open this again.' : 'p2pcamera does not run on this page.');
  });
}

field('settings').addEventListener('click', () => chrome.runtime.openOptionsPage());
start();
