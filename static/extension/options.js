import { normalize, problem, siteMatch } from './settings.js';

const field = (id) => document.getElementById(id);
const status = field('status');

function show(message, isError = false) {
  status.textContent = message;
  status.className = isError ? 'error' : '';
}

async function load() {
  const { settings } = await chrome.storage.local.get('settings');
  const s = normalize(settings);
  field('enabled').checked = s.enabled;
  field('endpoint').value = s.endpoint;
  field('session').value = s.session;
  field('token').value = s.token;
  field('filter').value = s.filter;
  field('sites').value = s.sites.join('\n');
}

field('form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const settings = normalize({
    enabled: field('enabled').checked,
    endpoint: field('endpoint').value,
    session: field('session').value,
    token: field('token').value,
    filter: field('filter').value,
    sites: field('sites').value.split('\n').map((s) => s.trim()).filter(Boolean),
  });
  const why = problem(settings);
  if (why) {
    show(why, true);
    return;
  }
  if (settings.sites.length > 0) {
    // Asked while handling the click: Chrome shows its permission prompt for the new sites.
    const origins = settings.sites.map(siteMatch);
    const granted = await chrome.permissions.request({ origins });
    if (!granted) {
      show('Chrome did not allow the extra sites; nothing saved.', true);
      return;
    }
  }
  await chrome.storage.local.set({ settings });
  show('Saved. Reload the page that uses the camera.');
});

load();
