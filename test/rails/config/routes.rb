Rails.application.routes.draw do
  devise_for :users
  root "home#show"
  resources :notes
  get "login", to: "sessions#new"
  post "login", to: "sessions#create"
  delete "logout", to: "sessions#destroy"
  get "visits/touch", to: "visits#touch"
  get "visits/page", to: "visits#page"
  get "up", to: "home#up"
end
