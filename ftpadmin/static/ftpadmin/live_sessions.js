/* Reload the live sessions' list every few seconds.
 *
 * The reload is a GET of the page's own URL, so its filters, search,
 * ordering and page stay. It waits while the user is choosing: a session or
 * an action selected, the search box or another text field focused, or the
 * tab hidden; the interval starts again once they are done. Pause stops it
 * (kept for the tab's other pages of the list). After an action, the first
 * reload waits longer, so its message can be read.
 */
'use strict';
(function() {
    const STORAGE_KEY = 'ftpadmin.liveSessions.paused';

    function choosing() {
        const form = document.getElementById('changelist-form');
        if (form) {
            if (form.querySelector('input.action-select:checked, #action-toggle:checked')) {
                return true;
            }
            const action = form.querySelector('select[name=action]');
            if (action && action.value) {
                return true;
            }
        }
        const active = document.activeElement;
        if (active && active.matches(
            'input[type=text], input[type=search], input:not([type]), select, textarea'
        )) {
            return true;
        }
        return document.hidden;
    }

    function start() {
        const box = document.getElementById('live-refresh');
        if (!box) {
            return;
        }
        const seconds = Math.max(1, Number(box.dataset.seconds) || 5);
        const label = box.querySelector('.live-refresh-state');
        const button = box.querySelector('button');
        let paused = window.sessionStorage.getItem(STORAGE_KEY) === '1';
        const afterMessage = document.querySelector('ul.messagelist li') ? 3 : 1;
        let due = Date.now() + seconds * 1000 * afterMessage;

        function show(state) {
            label.textContent = label.dataset[state];
            box.dataset.state = state;
            button.textContent = paused ? button.dataset.resume : button.dataset.pause;
        }

        button.addEventListener('click', function() {
            paused = !paused;
            window.sessionStorage.setItem(STORAGE_KEY, paused ? '1' : '0');
            due = Date.now() + seconds * 1000;
            show(paused ? 'paused' : 'running');
        });
        box.hidden = false;
        show(paused ? 'paused' : 'running');

        window.setInterval(function() {
            if (paused) {
                return;
            }
            if (choosing()) {
                due = Date.now() + seconds * 1000;
                show('waiting');
                return;
            }
            show('running');
            if (Date.now() >= due) {
                // replace(): a GET (never a re-sent POST), and no history entry.
                window.location.replace(window.location.href);
            }
        }, 250);
    }

    if (document.readyState === 'loading') {
        document.addEventListener('DOMContentLoaded', start);
    } else {
        start();
    }
})();
