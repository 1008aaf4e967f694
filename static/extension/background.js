// Registers the content scripts for the sites the user allowed on the options page (Meet and
// Teams are in the manifest), in the page's main world at document start.

import { normalize, siteMatch } from './settings.js';

const IDS = ['p2pcamera-user-sites-main', 'p2pcamera-user-sites-bridge'];

async function registerUserSites() {
  const { settings } = await chrome.storage.local.get('settings');
  const matches = normalize(settings).sites.map(siteMatch).filter(Boolean);
  const registered = await chrome.scripting.getRegisteredContentScripts({ ids: IDS });
  if (registered.length > 0) {
    await chrome.scripting.unregisterContentScripts({ ids: registered.map((s) => s.id) });
  }
  if (matches.length === 0) return;
  await chrome.scripting.registerContentScripts([
    { id: IDS[0], matches, js: ['p2pcamera.js', 'main-world.js'], runAt: 'document_start', world: 'MAIN' },
    { id: IDS[1], matches, js: ['bridge.js'], runAt: 'document_start' },
  ]);
}

chrome.runtime.onInstalled.addListener(() => registerUserSites().catch((e) => console.warn('p2pcamera:', e)));
chrome.runtime.onStartup.addListener(() => registerUserSites().catch((e) => console.warn('p2pcamera:', e)));
chrome.storage.onChanged.addListener((changes, area) => {
  if (area === 'local' && changes.settings) registerUserSites().catch((e) => console.warn('p2pcamera:', e));
});
